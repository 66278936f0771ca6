"""Names used in published tables -> meshcast's: hardware profiles, precisions, remat policies,
and the model a row belongs to.

Hardware names resolve through the profiles' own aliases (case and punctuation ignored), so a
CSV naming any hardware we have a profile for maps without code changes.
"""

from __future__ import annotations

import re

from hardware_profiles.schema import HardwareProfile
from simulator.published.rows import PublishedRow, RowError


def profile_for(row: PublishedRow, profiles: dict[str, HardwareProfile] | None = None
                ) -> HardwareProfile:
    """The profile the row's ``hardware`` names; ``profiles`` (profile name -> profile) replaces
    built-in ones, e.g. by a fitted profile. Unknown names raise RowError with the known ones."""
    from hardware_profiles import load_profile
    from meshcast.errors import MeshcastError

    name = row.text("hardware")
    try:
        prof = load_profile(name) if name else None
    except MeshcastError as e:
        raise RowError(f"line {row.line}: hardware: {e}".replace("hardware: hardware: ", "hardware: ")
                       + "; add the name to a profile's aliases") from None
    if prof is None:
        raise RowError(f"line {row.line}: hardware: empty; name a profile or one of its aliases")
    return (profiles or {}).get(prof.name, prof)


def hardware_note(row: PublishedRow, profile: HardwareProfile) -> str | None:
    """Says which profile the row's ``hardware`` loosely matched and by which rule, e.g.
    "hardware 'TPU v6e (Trillium)' matched profile tpu-v6e (alias after dropping '(...)' and the vendor)";
    None when the name is an exact alias (or a path, or does not resolve)."""
    from hardware_profiles import matched_how
    from meshcast.errors import MeshcastError

    name = row.text("hardware")
    if not name:
        return None
    try:
        _, how = matched_how(name)
    except MeshcastError:
        return None
    if how in ("exact alias", "path"):
        return None
    return f"hardware {name!r} matched profile {profile.name} ({how})"


def precision_of(row: PublishedRow) -> str:
    """Matmul precision: any FP4 variant (NVFP4, MXFP4) -> fp4; any FP8 variant (FP8-CS,
    MXFP8, FP8-MX, TE hybrid, blockwise) -> fp8; BF16, mixed FP16 (same peak on A100/H100) and
    "bf16 activations, fp32 weights" -> bf16."""
    t = row.text("precision").lower()
    if "fp4" in t:
        return "fp4"
    if "fp8" in t:
        return "fp8"
    if "bf16" in t or "fp16" in t or not t or t.startswith("not stated"):
        return "bf16"
    raise RowError(f"line {row.line}: precision: unknown format (got {row.text('precision')!r}); "
                   "use BF16, FP16, an FP8 variant or an FP4 variant")


def remat_of(row: PublishedRow) -> str | None:
    """``full`` (also MaxText's ``qkv_proj_offloaded``, which recomputes all but the offloaded
    QKV projections); ``selective``; None when the row does not state it (empty, "not stated
    ..."): its source's documented default applies (:mod:`simulator.published.sources`);
    otherwise ``none`` (flash attention's own recompute is part of meshcast's attention
    backward)."""
    t = row.text("recompute").lower()
    if row.is_blank("recompute") or t.startswith("not stated"):
        return None
    if "full" in t or "offload" in t:
        return "full"
    if "selective" in t:
        return "selective"
    return "none"


def is_swiglu(row: PublishedRow) -> bool:
    """Gated (SwiGLU) FFN unless the row says otherwise: GPT-2/3-style models (``GPT-``,
    ``GPT3-``) use GELU and Nemotron-4-style models squared ReLU, both two matrices."""
    text = " ".join(row.text(c) for c in ("notes", "moe_layer_notes", "shape_source")).lower()
    if "swiglu" in text:
        return True
    if "squared-relu" in text or "squared relu" in text:
        return False
    name = row.text("model").lower()
    return not (re.match(r"gpt[-0-9]", name) or name.startswith("nemotron-"))


def base_model_name(name: str) -> str:
    """The model a row belongs to for grouping and held-out splits: variant tags in
    parentheses (``DeepSeekV3 (tokendrop)``) dropped, case and separators ignored."""
    base = name.split("(")[0].strip().lower()
    return "".join(ch for ch in base if ch.isalnum() or ch == ".")
