"""Hardware profiles: validated YAML data, one file per system, a source on every number."""

from hardware_profiles.loader import (
    FITTED_DIR,
    PROFILE_DIR,
    list_profiles,
    load_profile,
    load_profile_file,
    matched_how,
    profile_dirs,
    save_profile,
)
from hardware_profiles.schema import HardwareProfile, NetworkLevel, SliceShape, Sourced

__all__ = [
    "FITTED_DIR",
    "PROFILE_DIR",
    "HardwareProfile",
    "NetworkLevel",
    "SliceShape",
    "Sourced",
    "list_profiles",
    "load_profile",
    "load_profile_file",
    "matched_how",
    "profile_dirs",
    "save_profile",
]
