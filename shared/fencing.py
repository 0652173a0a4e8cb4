"""Fencing tokens: each run of a task, and each run of a chunk, has a token; its writes count only while it holds.

A run's token is stored in a field of its hash when the run begins (a task's `run`, a chunk's `run:<index>`) and
removed when the run is taken back, so a worker taken for dead that carries on cannot write over a newer run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Fence:
    """A run's hold on a hash: writes made in its name count only while `field` of `key` still holds `token`."""

    key: str
    field: str
    token: str


# A Lua function, true while every fence holds: their keys sit in KEYS from `key_at`, and their field and token
# pairs in ARGV from `arg_at`. Scripts that check fences start with it.
LUA_FENCED = """
local function fenced(key_at, arg_at, count)
  for j = 0, count - 1 do
    if redis.call('HGET', KEYS[key_at + j], ARGV[arg_at + 2 * j]) ~= ARGV[arg_at + 2 * j + 1] then
      return false
    end
  end
  return true
end
"""


def script_args(fences: Sequence[Fence]) -> tuple[list[str], list[str]]:
    """The fences' keys, and their fields and tokens in pairs, for a script that calls `fenced`."""
    return [fence.key for fence in fences], [item for fence in fences for item in (fence.field, fence.token)]
