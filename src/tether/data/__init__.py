"""Records in the conventions users already have (TRL / HF datasets), and their IO."""

from tether.data.records import (
    Message,
    PreferenceRecord,
    PromptRecord,
    SFTRecord,
    UnpairedRecord,
)

__all__ = ["Message", "PreferenceRecord", "PromptRecord", "SFTRecord", "UnpairedRecord"]
