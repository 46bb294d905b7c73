"""A generated smart-home data set: spoken commands, one household per device, non-IID like homes.

Each household has its own rooms and device nicknames, a phrasing habit (terse, polite, wake word,
question), a language mix (English with some German or Spanish), a typo rate, and a label skew
(Dirichlet over intents): so the fleet differs the way real homes do. Held-out households, never
seen in training, measure how the global model generalises; each household's own test commands
measure personalisation.

On disk, exactly what a device's data folder holds for a text model (agent/text_data.py):

    <root>/labels.json                     the intent names, index = label
    <root>/household-NNN/train.jsonl       {"text": ..., "label": int} one per line
    <root>/household-NNN/test.jsonl        the same household's held-out commands
    <root>/test.jsonl                      commands from unseen households (the server's test set)

Everything is drawn from one seeded numpy Generator: same seed, same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "INTENTS",
    "Command",
    "Household",
    "make_households",
    "sample_commands",
    "write_smarthome",
]

INTENTS: tuple[str, ...] = (
    "lights_on",
    "lights_off",
    "dim_lights",
    "heating_up",
    "heating_down",
    "blinds_open",
    "blinds_close",
    "media_play",
    "media_pause",
    "volume_up",
    "set_timer",
    "add_shopping",
)

# Templates per language and intent. Slots: {room} {lamp} {speaker} {item} {n}.
_EN: dict[str, tuple[str, ...]] = {
    "lights_on": (
        "turn on the lights in the {room}",
        "switch on {lamp}",
        "lights on in the {room}",
        "it's too dark in the {room}",
        "{lamp} on",
    ),
    "lights_off": (
        "turn off the lights in the {room}",
        "switch off {lamp}",
        "lights off {room}",
        "kill the lights in the {room}",
        "{lamp} off",
    ),
    "dim_lights": (
        "dim the lights in the {room}",
        "set {lamp} to {n} percent",
        "make the {room} a bit darker",
        "lower the brightness of {lamp}",
    ),
    "heating_up": (
        "turn up the heating in the {room}",
        "make the {room} warmer",
        "set the thermostat to {n} degrees",
        "it's freezing in the {room}",
        "heat up the {room}",
    ),
    "heating_down": (
        "turn down the heating in the {room}",
        "it's too hot in the {room}",
        "make the {room} cooler",
        "lower the thermostat by {n} degrees",
    ),
    "blinds_open": (
        "open the blinds in the {room}",
        "raise the shutters in the {room}",
        "let some light into the {room}",
        "blinds up {room}",
    ),
    "blinds_close": (
        "close the blinds in the {room}",
        "lower the shutters in the {room}",
        "blinds down in the {room}",
        "shut the curtains in the {room}",
    ),
    "media_play": (
        "play some music on {speaker}",
        "play my playlist in the {room}",
        "start the radio on {speaker}",
        "put on some jazz in the {room}",
    ),
    "media_pause": (
        "pause the music",
        "stop {speaker}",
        "pause {speaker} in the {room}",
        "silence please",
    ),
    "volume_up": (
        "turn it up",
        "louder on {speaker}",
        "raise the volume in the {room}",
        "volume up by {n}",
    ),
    "set_timer": (
        "set a timer for {n} minutes",
        "remind me in {n} minutes",
        "start a {n} minute timer",
        "timer {n} minutes",
    ),
    "add_shopping": (
        "add {item} to the shopping list",
        "we need {item}",
        "put {item} on my list",
        "remember to buy {item}",
    ),
}
_DE: dict[str, tuple[str, ...]] = {
    "lights_on": ("mach das licht im {room} an", "{lamp} einschalten", "licht an {room}"),
    "lights_off": ("mach das licht im {room} aus", "{lamp} ausschalten", "licht aus {room}"),
    "dim_lights": ("dimme das licht im {room}", "{lamp} auf {n} prozent"),
    "heating_up": ("heizung im {room} höher", "mach es im {room} wärmer"),
    "heating_down": ("heizung im {room} runter", "im {room} ist es zu warm"),
    "blinds_open": ("rollos im {room} hoch", "öffne die jalousien im {room}"),
    "blinds_close": ("rollos im {room} runter", "schließe die jalousien im {room}"),
    "media_play": ("spiel musik auf {speaker}", "spiel radio im {room}"),
    "media_pause": ("musik pausieren", "stopp {speaker}"),
    "volume_up": ("lauter bitte", "mach {speaker} lauter"),
    "set_timer": ("stell einen timer auf {n} minuten", "timer {n} minuten"),
    "add_shopping": ("setz {item} auf die einkaufsliste", "wir brauchen {item}"),
}
_ES: dict[str, tuple[str, ...]] = {
    "lights_on": ("enciende la luz del {room}", "prende {lamp}"),
    "lights_off": ("apaga la luz del {room}", "apaga {lamp}"),
    "dim_lights": ("baja la luz del {room}", "pon {lamp} al {n} por ciento"),
    "heating_up": ("sube la calefacción del {room}", "hace frío en el {room}"),
    "heating_down": ("baja la calefacción del {room}", "hace calor en el {room}"),
    "blinds_open": ("sube las persianas del {room}", "abre las cortinas del {room}"),
    "blinds_close": ("baja las persianas del {room}", "cierra las cortinas del {room}"),
    "media_play": ("pon música en {speaker}", "pon la radio en el {room}"),
    "media_pause": ("pausa la música", "para {speaker}"),
    "volume_up": ("sube el volumen", "más alto en {speaker}"),
    "set_timer": ("pon un temporizador de {n} minutos", "avísame en {n} minutos"),
    "add_shopping": ("añade {item} a la lista de la compra", "necesitamos {item}"),
}
_LANGS = {"en": _EN, "de": _DE, "es": _ES}

_ROOMS = (
    "kitchen", "living room", "bedroom", "bathroom", "office", "hallway", "garage", "den",
    "nursery", "attic", "basement", "dining room", "guest room", "studio", "porch", "laundry",
)  # fmt: skip
_OWNERS = ("mia", "leo", "emma", "noah", "sofia", "omar", "yuki", "lena", "ravi", "ana")
_LAMPS = (
    "the big lamp", "the floor lamp", "the led strip", "the ceiling light", "the reading lamp",
    "the fairy lights", "the desk lamp", "the hue bulbs", "the spotlights", "the lantern",
)  # fmt: skip
_SPEAKERS = (
    "the speaker", "the sonos", "the kitchen radio", "the soundbar", "the echo", "the boombox",
)  # fmt: skip
_ITEMS = (
    "milk", "eggs", "bread", "coffee", "apples", "rice", "butter", "cat food", "oat milk",
    "tomatoes", "pasta", "cheese", "dish soap", "batteries", "bananas", "yoghurt",
)  # fmt: skip
_PREFIXES = {
    "terse": ("",),
    "polite": ("please ", "could you ", "would you kindly ", "can you please "),
    "wake": ("hey home ", "ok house ", "computer ", "jarvis "),
    "chatty": ("hmm ", "so ", "right, ", "oh and "),
}
_SUFFIXES = {"terse": ("",), "polite": (" please", " thanks", ""), "wake": ("",), "chatty": ("",)}


@dataclass(frozen=True)
class Household:
    """One home's habits: what it says, how, in which languages, and how often each intent."""

    name: str
    rooms: tuple[str, ...]
    lamps: tuple[str, ...]
    speakers: tuple[str, ...]
    items: tuple[str, ...]
    style: str  # a key of _PREFIXES
    languages: tuple[str, ...]
    language_weights: tuple[float, ...]
    intent_weights: tuple[float, ...]  # (len(INTENTS),), sums to 1: the household's label skew
    typo_rate: float  # chance per command of one character slip


@dataclass(frozen=True)
class Command:
    text: str
    label: int


def _pick(rng: np.random.Generator, pool: tuple[str, ...], k: int) -> tuple[str, ...]:
    return tuple(str(pool[i]) for i in rng.choice(len(pool), size=min(k, len(pool)), replace=False))


def make_households(
    count: int, alpha: float, seed: int, prefix: str = "household"
) -> list[Household]:
    """`count` households; `alpha` is the Dirichlet concentration of their intent mix."""
    if count < 1 or alpha <= 0:
        raise ValueError("count must be >= 1 and alpha > 0")
    rng = np.random.default_rng(seed)
    homes = []
    for i in range(count):
        rooms = list(_pick(rng, _ROOMS, int(rng.integers(3, 7))))
        if rng.random() < 0.5:  # a room named after its occupant: words no other home uses
            rooms.append(f"{_OWNERS[int(rng.integers(len(_OWNERS)))]}'s room")
        second = ("de", "es")[int(rng.integers(2))]
        share = float(rng.choice((0.0, 0.0, 0.15, 0.4, 0.7)))
        homes.append(
            Household(
                name=f"{prefix}-{i:03d}",
                rooms=tuple(rooms),
                lamps=_pick(rng, _LAMPS, int(rng.integers(1, 4))),
                speakers=_pick(rng, _SPEAKERS, int(rng.integers(1, 3))),
                items=_pick(rng, _ITEMS, int(rng.integers(4, 9))),
                style=str(rng.choice(sorted(_PREFIXES))),
                languages=("en", second),
                language_weights=(1.0 - share, share),
                intent_weights=tuple(float(w) for w in rng.dirichlet(np.full(len(INTENTS), alpha))),
                typo_rate=float(rng.choice((0.0, 0.05, 0.2))),
            )
        )
    return homes


def _typo(text: str, rng: np.random.Generator) -> str:
    if len(text) < 4:
        return text
    i = int(rng.integers(1, len(text) - 1))
    kind = int(rng.integers(3))
    if kind == 0:  # drop a character
        return text[:i] + text[i + 1 :]
    if kind == 1:  # swap two neighbours
        return text[: i - 1] + text[i] + text[i - 1] + text[i + 1 :]
    return text[:i] + text[i] + text[i:]  # double one


def sample_commands(home: Household, n: int, rng: np.random.Generator) -> list[Command]:
    """`n` commands the way `home` says them (labels drawn from its intent mix)."""
    labels = rng.choice(len(INTENTS), size=n, p=np.asarray(home.intent_weights))
    out = []
    for label in labels:
        lang = home.languages[int(rng.choice(len(home.languages), p=home.language_weights))]
        template = str(rng.choice(_LANGS[lang][INTENTS[int(label)]]))
        text = template.format(
            room=str(rng.choice(home.rooms)),
            lamp=str(rng.choice(home.lamps)),
            speaker=str(rng.choice(home.speakers)),
            item=str(rng.choice(home.items)),
            n=int(rng.choice((2, 3, 5, 10, 15, 20, 21, 30, 45, 50))),
        )
        text = (
            str(rng.choice(_PREFIXES[home.style])) + text + str(rng.choice(_SUFFIXES[home.style]))
        )
        if rng.random() < home.typo_rate:
            text = _typo(text, rng)
        out.append(Command(text, int(label)))
    return out


def _write_jsonl(path: Path, commands: list[Command]) -> None:
    lines = (json.dumps({"text": c.text, "label": c.label}, ensure_ascii=False) for c in commands)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_smarthome(
    root: Path,
    households: int,
    *,
    alpha: float = 0.5,
    train_per_home: int = 40,
    test_per_home: int = 20,
    unseen_households: int = 20,
    unseen_per_home: int = 20,
    seed: int = 0,
) -> list[Path]:
    """Write the data set under `root`; returns the household folders (one per device)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    (root / "labels.json").write_text(json.dumps(list(INTENTS)) + "\n", encoding="utf-8")
    folders = []
    for home in make_households(households, alpha, seed):
        folder = root / home.name
        folder.mkdir(exist_ok=True)
        _write_jsonl(folder / "train.jsonl", sample_commands(home, train_per_home, rng))
        _write_jsonl(folder / "test.jsonl", sample_commands(home, test_per_home, rng))
        folders.append(folder)
    # Unseen households: near-uniform intents (alpha 10) so the global test covers every intent.
    unseen = make_households(unseen_households, 10.0, seed + 7919, prefix="unseen")
    held_out = [c for home in unseen for c in sample_commands(home, unseen_per_home, rng)]
    _write_jsonl(root / "test.jsonl", held_out)
    return folders
