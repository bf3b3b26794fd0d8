"""The command palette (ctrl+p): every action of the action table, by name, with its keys."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from treadle.tui.actions import ACTIONS, ActionSpec
from treadle.tui.keymap import DEFAULT_KEYS, key_text


class TreadleCommands(Provider):
    """discover() and search() share one list: the palette entries of the action table."""

    def _entries(self) -> Iterator[tuple[str, ActionSpec]]:
        keymap = getattr(self.app, "keys_in_force", lambda: DEFAULT_KEYS)()
        for spec in ACTIONS:
            if spec.palette:
                yield f"{spec.title}  ({key_text(keymap.get(spec.id, DEFAULT_KEYS[spec.id]))})", spec

    def _run(self, spec: ActionSpec) -> None:
        run = getattr(self.app, "run_spec", None)
        if run is not None:
            run(spec)

    async def discover(self) -> Hits:
        for title, spec in self._entries():
            yield DiscoveryHit(title, partial(self._run, spec), help=spec.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, spec in self._entries():
            score = max(matcher.match(title), matcher.match(spec.help) * 0.8)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self._run, spec), text=title, help=spec.help)
