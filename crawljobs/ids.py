"""Job ids: UUID version 7 (time-ordered), so that a batch's rows land together in the primary-key index."""

from __future__ import annotations

import os
import time
import uuid


def new_job_id() -> uuid.UUID:
    """A fresh UUIDv7: 48 bits of Unix milliseconds, the version, 74 random bits, the variant."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    return uuid.UUID(int=value)


def new_job_ids(count: int) -> list[uuid.UUID]:
    """``count`` fresh UUIDv7 ids sharing one timestamp (ordered among themselves by their random part only)."""
    millis = (time.time_ns() // 1_000_000) & 0xFFFF_FFFF_FFFF
    head = (millis << 80) | (0x7 << 76)
    ids = []
    blob = os.urandom(10 * count)
    for i in range(count):
        rand = int.from_bytes(blob[i * 10 : i * 10 + 10], "big")
        ids.append(
            uuid.UUID(int=head | (((rand >> 62) & 0xFFF) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1)))
        )
    return ids
