"""`treadle cache info | clear [--older-than DAYS]`: the response cache seen from the command line."""

from __future__ import annotations

import argparse
import sqlite3
import time

from treadle.engine.errors import ConfigError, Problem
from treadle.engine.response_cache import cache_info, clear_cache, default_cache_path


def cmd_cache(args: argparse.Namespace) -> int:
    path = args.path or default_cache_path()
    try:
        if args.cache_command == "clear":
            if args.older_than is not None and args.older_than < 0:
                raise ConfigError([Problem("--older-than", f"must be a number of days >= 0, got {args.older_than}")])
            deleted = clear_cache(path, args.older_than)
            age = "" if args.older_than is None else f" made more than {args.older_than:g} days ago"
            print(f"deleted {deleted} cached answers{age} from {path}")
            return 0
        info = cache_info(path)
    except sqlite3.Error as exc:
        raise ConfigError([Problem(str(path), f"is not a usable response cache ({exc})")]) from None
    print(f"path: {info.path}")
    print(f"entries: {info.entries}")
    print(f"size: {info.size_bytes / 1e6:.1f} MB")
    for at, hits, misses in info.recent_runs:
        total = hits + misses
        rate = f"{hits / total:.0%}" if total else "-"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
        print(f"run {when}: {hits} hits, {misses} misses (hit rate {rate})")
    return 0
