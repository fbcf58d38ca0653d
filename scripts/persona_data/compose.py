"""Composes procedural personas from the component lists: who, looks, card text, voice recipe and portrait look.

Hands plain persona dicts (card fields plus `look`, `tts`, `composition`) to cards.py, portraits.py and voices.py.
The draws from the seeded RNG happen in a fixed order, so the same components and seed give the same personas.
"""
from __future__ import annotations

import random
import re
from collections import Counter

from .text import PRONOUNS, article, cap, fill, number_words, slugify

SEED = 20240611  # composes the procedural personas of data/personas
N_PROCEDURAL = 85
NAME_TRIES = 400  # draws before a name pool is declared too small

GENERIC_ACTIONS = [
    "*{name} leans a little closer.*", "*{name} considers this for a moment.*", "*{name} glances around.*",
    "*{name} folds {pos} arms.*", "*{name} raises an eyebrow.*", "*{name} lowers {pos} voice.*",
]
ROBOT_ACTIONS = ["*{name}'s gears whirr softly.*", "*{name} tilts its head with a click.*", "*{name}'s eyes dim, then brighten.*"]
PIPER_PACE = {  # length_scale by speech style (slower > 1)
    "terse": 1.1, "flowery": 1.05, "slang_modern": 0.9, "street_future": 0.85, "formal": 1.1, "archaic": 1.15,
    "childlike": 0.9, "robotic": 1.0, "pirate": 1.0, "southern_drawl": 1.25, "noir": 1.1, "nervous": 0.9,
    "grandiose": 1.0, "folksy": 1.1, "clinical": 1.05, "bubbly": 0.85, "gloomy": 1.3, "military": 0.95,
    "riddling": 1.2,
}
ESPEAK_ACCENTS = {
    "ancient": ["en-gb", "en-gb-x-rp", "en"], "medieval": ["en-gb-x-gbclan", "en-gb-scotland", "en-gb"],
    "fantasy": ["en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbcwmd", "en"], "age_of_sail": ["en-gb", "en-029", "en-gb-x-gbcwmd"],
    "victorian": ["en-gb-x-rp", "en-gb", "en-gb-x-gbclan"], "western": ["en-us"], "twenties": ["en-us-nyc", "en-us"],
    "midcentury": ["en-us", "en-gb"], "modern": ["en-gb-scotland", "en-us", "en-gb", "en-029"],
    "cyberpunk": ["en-us", "en-029", "en"], "far_future": ["en", "en-us", "en-gb-x-rp"],
}
ESPEAK_VARIANTS = {
    "f": ["f1", "f2", "f3", "f4", "f5", "Annie", "Alicia", "linda", "belinda", "steph", "anika"],
    "m": ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Gene", "Mike", "david", "edward", "john", "max", "paul",
          "rob", "robert", "travis", "victor"],
    "old_f": ["grandma", "f2", "f4"], "old_m": ["grandpa", "m3", "m7"],
    "robot": ["robosoft", "robosoft2", "robosoft3", "robosoft5", "robosoft6", "klatt4", "UniRobot", "anikaRobot"],
    "whisper_f": ["whisperf"], "whisper_m": ["whisper"],
}
ERA_BACKGROUNDS = {
    "ancient": ["ancient", "ancient", "egypt"], "medieval": ["medieval"], "fantasy": ["fantasy", "wizard", "forge", "cottage"],
    "age_of_sail": ["sea", "sea_night"], "victorian": ["victorian", "parlour", "steampunk"], "western": ["western", "canyon"],
    "twenties": ["noir", "jazz"], "midcentury": ["midcentury", "industrial", "hills"],
    "modern": ["modern", "cafe", "suburb", "studio", "beach"], "cyberpunk": ["cyber"],
    "far_future": ["space", "spaceship", "mars", "ice"],
}
HORROR_BACKGROUND_ERAS = {"ancient", "medieval", "fantasy", "age_of_sail", "victorian", "western"}
CHILD_ARCHETYPES = ["worrier", "idealist", "jester", "braggart", "dreamer", "adventurer", "caretaker", "gossip", "scholar"]
STYLE_EXPRESSION = {"bubbly": "grin", "childlike": "open", "gloomy": "sad", "terse": "flat", "military": "flat",
                    "grandiose": "grin", "noir": "smirk", "nervous": "open", "riddling": "smirk", "robotic": "flat"}
ARCHETYPE_EXPRESSION = {"jester": "grin", "rogue": "smirk", "grump": "frown", "cynic": "smirk", "stoic": "flat",
                        "caretaker": "smile", "worrier": "sad", "dreamer": "calm", "mentor": "calm"}


def pick_balanced(rng: random.Random, options: list, counts: Counter):
    """A random option among the least used so far: spreads eras, archetypes and styles evenly."""
    low = min(counts[o] for o in options)
    choice = rng.choice([o for o in options if counts[o] == low])
    counts[choice] += 1
    return choice


def pick_balanced(rng: random.Random, options: list, counts: Counter):
    """A random option among the least used so far: spreads eras, archetypes and styles evenly."""
    low = min(counts[o] for o in options)
    choice = rng.choice([o for o in options if counts[o] == low])
    counts[choice] += 1
    return choice


def name_words(name: str) -> list[str]:
    """The words of a name, for collision checks: 'Granny Wren' -> ['granny', 'wren'], 'Volt Reyes-9' -> [..., 'reyes', '9']."""
    return [w for w in re.split(r"[^a-z0-9]+", slugify(name)) if w]


def child_archetypes(comp: dict) -> list[str]:
    """Archetypes a child may have: the built-in list, then any component archetype marked `child: true`."""
    return CHILD_ARCHETYPES + [k for k, a in comp["archetypes"].items() if a.get("child") and k not in CHILD_ARCHETYPES]


class Composer:
    """Draws procedural personas one at a time from `comp`, keeping the least-used counters between draws.

    unique_first: a first name may be used once (data/personas, 85 personas); otherwise only full names and
    slugs are unique (the scaled set, thousands), robots get a serial number, and a crowded name pool adds a
    middle initial. Names in `taken_names` (full and first) and slugs in `taken_slugs` are never used.
    """

    def __init__(self, comp: dict, taken_names: set[str], taken_slugs: set[str], *, seed: int = SEED,
                 unique_first: bool = True, reserved_words: frozenset[str] = frozenset()):
        self.comp, self.rng, self.unique_first = comp, random.Random(seed), unique_first
        self.reserved = set(taken_names)  # names no new persona may take, first or full
        self.reserved_words = reserved_words  # no word of a new name may be one of these
        self.taken_names, self.taken_slugs = taken_names, taken_slugs
        self.counts = {k: Counter() for k in ("era", "arch", "style", "quirk", "sit")}
        self.index = 0

    def next(self) -> dict:
        p = self._compose(self.index)
        self.index += 1
        return p

    def _pick(self) -> dict:
        """Which components: style, era, archetype, quirk, place, situation, role."""
        rng, comp, n = self.rng, self.comp, self.counts
        style_key = pick_balanced(rng, list(comp["speech_styles"]), n["style"])
        style = comp["speech_styles"][style_key]
        allowed = list(comp["eras"]) if style["eras"] == "all" else list(style["eras"])
        era_key = pick_balanced(rng, allowed, n["era"])
        era = comp["eras"][era_key]
        child, robot = bool(style.get("child")), bool(style.get("robot"))
        arch_key = pick_balanced(rng, child_archetypes(comp) if child else list(comp["archetypes"]), n["arch"])
        quirk_i = pick_balanced(rng, list(range(len(comp["quirks"]))), n["quirk"])
        place = rng.choice(era["places"])
        sit_i = pick_balanced(rng, list(range(len(era["situations"]))),
                              Counter({k[1]: v for k, v in n["sit"].items() if k[0] == era_key}))
        n["sit"][(era_key, sit_i)] += 1
        if child:
            role = rng.choice([r for r in comp["child_roles"] if era_key in r["eras"]])
        else:
            role = rng.choice(era["roles"])
        return {"style_key": style_key, "style": style, "era_key": era_key, "era": era, "child": child,
                "robot": robot, "arch_key": arch_key, "arch": comp["archetypes"][arch_key], "quirk_i": quirk_i,
                "quirk": comp["quirks"][quirk_i], "place": place, "sit_i": sit_i, "situation": era["situations"][sit_i],
                "role": role}

    def draw_name(self, era: dict, gender: str, robot: bool, rng: random.Random | None = None) -> tuple[str, str, str]:
        """(first name, full name, slug), unused so far; drawn with `rng` (default: the composer's)."""
        rng = rng or self.rng
        for tries in range(NAME_TRIES):
            if robot:
                first = full = rng.choice(self.comp["robot_names"])
                if not self.unique_first:
                    first = full = f"{first}-{rng.randint(2, 99)}"
            else:
                first = rng.choice(era["names"][gender])
                surname = rng.choice(era["surnames"])
                crowded = not self.unique_first and tries >= NAME_TRIES // 4
                full = f"{first} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {surname}" if crowded else f"{first} {surname}"
            slug = slugify(full)
            first_free = first not in self.taken_names if self.unique_first else first not in self.reserved
            clear = not (set(name_words(full)) & self.reserved_words)
            if full not in self.taken_names and first_free and slug not in self.taken_slugs and clear:
                self.taken_names.update({full, first})
                self.taken_slugs.add(slug)
                return first, full, slug
        raise ValueError(f"no unused name left after {NAME_TRIES} draws (era {era.get('label')!r}, gender {gender}): "
                         "add names or surnames to the components")

    def _who(self, k: dict) -> dict:
        """Gender, name, age, species and the template fields the card text is filled with."""
        rng, arch, role = self.rng, k["arch"], k["role"]
        gender = "n" if k["robot"] else rng.choice("fm")
        first, full, slug = self.draw_name(k["era"], gender, k["robot"])
        lo, hi = (8, 12) if k["child"] else ((20, 150) if k["robot"] else arch["ages"])
        age = rng.randint(lo, hi)
        species = ""
        if k["era"].get("species") and not k["robot"]:
            species = rng.choice(k["era"]["species"])
            if species == "elf" and not k["child"]:
                age = rng.randint(90, 420)
            elif species == "dwarf" and not k["child"]:
                age = rng.randint(45, 190)
        pro = PRONOUNS[gender]
        fields = {"name": first, **pro, **{key.capitalize(): v.capitalize() for key, v in pro.items()},
                  "place": k["place"]["place"], "item": "", "role": role["role"], "age": number_words(age)}
        fields["item"] = fill(role["item"], fields)
        fields["task"] = fill(role["task"], fields)
        goal_t = rng.choice(arch["goals"])
        goal3 = fill(goal_t, fields)
        goal1 = fill(goal_t, {**fields, **PRONOUNS["1"]})
        like = fill(rng.choice(arch["likes"]), fields)
        dislike = fill(rng.choice(arch["dislikes"]), fields)
        role_phrase = f"{species} {role['role']}" if species and species != "human" else role["role"]
        fields.update({"role": role_phrase, "Role": cap(role_phrase), "a_role": article(role_phrase),
                       "A_role": cap(article(role_phrase)), "Task": cap(fields["task"]), "goal": goal3,
                       "goal1": goal1, "Goal1": cap(goal1), "like": like, "dislike": dislike})
        return {"gender": gender, "first": first, "full": full, "slug": slug, "age": age, "species": species,
                "pro": pro, "fields": fields, "role_phrase": role_phrase}

    def _robot_looks(self, k: dict, w: dict, clothing: dict) -> tuple[dict, str, str]:
        body = self.rng.choice(self.comp["robot_bodies"])
        kind, made = self.comp["robot_kinds"][k["era_key"]]["kind"], self.comp["robot_kinds"][k["era_key"]]["made"]
        look = {"skin": body["skin"], "face": "robot", "hair": "none", "hair_style": "bald",
                "eyes": "amber" if body["skin"] in ("brass", "copper") else "blue"}
        look["accessories"] = ["single_optic"] if "single blue optic" in body["text"] else []
        looks_sentence = f"It has {body['text']}, and wears {clothing['text']}."
        who = (f"{{{{char}}}} is {article(kind)} {k['place']['where']} {k['place']['when']}, {made} "
               f"{number_words(w['age'])} years ago to work as {article(w['role_phrase'])}.")
        return look, looks_sentence, who

    def _human_looks(self, k: dict, w: dict, clothing: dict) -> tuple[dict, str, str]:
        rng, comp, era, gender, age, species = self.rng, self.comp, k["era"], w["gender"], w["age"], w["species"]
        accessories: list[str] = []
        feats: list[str] = []
        hair = rng.choice(comp["hair_colours"] + era.get("hair_colours", []))
        if age >= 60 and rng.random() < 0.75 and species != "elf":
            hair = rng.choice(["grey", "white", "silver"])
        hs = rng.choice(comp["hair_styles"])
        feats.append(hs["text"].format(colour=hair))
        if gender == "m" and age >= 18:
            r = rng.random()
            if r < 0.3 or species == "dwarf":
                accessories.append("beard")
                feats.append(f"a bushy {hair} beard")
            elif r < 0.42:
                accessories.append("moustache")
                feats.append(f"a {hair} moustache")
        self._marks(k, accessories, feats)
        if species == "elf":
            accessories.append("pointed_ears")
            feats.append("long pointed ears")
        if gender == "f" and rng.random() < 0.35:
            accessories.append("earrings")
        eyes = rng.choice(comp["eye_colours"])
        feats.append(f"{eyes} eyes")
        build = rng.choice(comp["builds"])
        if k["child"]:
            build = rng.choice(["small and quick", "skinny", "tall for {pos} age", "round-cheeked"]).format(**w["pro"])
        skin = rng.choice(era["skins"])
        look = {"skin": skin, "hair": hair, "hair_style": hs["style"], "eyes": eyes, "accessories": accessories}
        feat_text = ", ".join(feats[:-1]) + " and " + feats[-1]
        looks_sentence = f"{cap(w['pro']['subj'])} is {build}, with {feat_text}, and wears {clothing['text']}."
        age_phrase = f"{number_words(age)}-year-old {w['role_phrase']}"
        who = f"{{{{char}}}} is {article(age_phrase)} {k['place']['where']} {k['place']['when']}."
        return look, looks_sentence, who

    def _marks(self, k: dict, accessories: list[str], feats: list[str]):
        """Spectacles, an eyepatch or scar, a cybernetic eye or freckles, by archetype, style and era."""
        r = self.rng.random()
        if k["arch_key"] in ("scholar", "mentor") or k["style_key"] == "clinical":
            if r < 0.6:
                accessories.append("glasses")
                feats.append("round spectacles")
        elif k["arch_key"] in ("rogue", "adventurer", "braggart") and r < 0.3:
            accessories.append("eyepatch" if r < 0.12 else "scar")
            feats.append("a patch over one eye" if r < 0.12 else "a scar across one cheek")
        elif k["era_key"] == "cyberpunk" and r < 0.45:
            accessories.append("cyber_eye")
            feats.append("a glowing cybernetic eye")
        elif r < 0.2:
            accessories.append("freckles")
            feats.append("a dusting of freckles")

    def _looks(self, k: dict, w: dict) -> tuple[dict, str, str]:
        """(portrait look, the description's looks sentence, its first sentence): both read the same choices."""
        clothing = self.rng.choice(k["era"]["clothing"])
        make = self._robot_looks if k["robot"] else self._human_looks
        look, looks_sentence, who = make(k, w, clothing)
        place = k["place"]
        if "," in place["where"]:  # "in Austin, Texas, today" / "in Thornley, a Yorkshire mill town, in 1868"
            who = who.replace(f"{place['where']} {place['when']}", f"{place['where']}, {place['when']}")
        horror_eras = k["era"].get("horror_background", k["era_key"] in HORROR_BACKGROUND_ERAS)
        if k["situation"]["genre"] == "horror" and horror_eras:
            background = "horror"
        else:
            background = self.rng.choice(k["era"].get("backgrounds") or ERA_BACKGROUNDS[k["era_key"]])
        accessories = look.pop("accessories")
        expression = (k["style"].get("expression") or STYLE_EXPRESSION.get(k["style_key"])
                      or k["arch"].get("expression") or ARCHETYPE_EXPRESSION.get(k["arch_key"], "smile"))
        look.update({"background": background, "hat": clothing["hat"], "hat_colour": clothing["colour"],
                     "outfit": clothing["outfit"], "outfit_colour": clothing["colour"], "accessories": accessories,
                     "expression": expression})
        return look, looks_sentence, who

    def _dialogue(self, k: dict, w: dict) -> tuple[list[str], list[dict]]:
        """Three `<START>` example exchanges, replies from the style's templates; and what each one used."""
        rng, comp, fields, first = self.rng, self.comp, w["fields"], w["first"]
        kinds = rng.sample(list(comp["user_prompts"]), 3)
        blocks, used = [], []
        for j, kind_key in enumerate(kinds):
            user = rng.choice(comp["user_prompts"][kind_key])
            reply = fill(k["style"]["replies"][kind_key], fields)
            if j == 0:
                reply = f"*{first} {fill(k['quirk']['action'], fields)}.* {reply}"
            elif j == 1:
                reply = fill(rng.choice(ROBOT_ACTIONS if k["robot"] else GENERIC_ACTIONS), fields) + " " + reply
            blocks.append(f"<START>\n{{{{user}}}}: {user}\n{{{{char}}}}: {reply}")
            used.append({"kind": kind_key, "user": user, "reply": reply})
        return blocks, used

    def _compose(self, i: int) -> dict:
        k = self._pick()
        w = self._who(k)
        look, looks_sentence, who = self._looks(k, w)
        pro, fields, first, style, era = w["pro"], w["fields"], w["first"], k["style"], k["era"]
        description = " ".join([
            who, looks_sentence,
            f"{cap(pro['subj'])} spends {pro['pos']} days {fields['task']}, and never goes anywhere without {pro['pos']} {fields['item']}.",
            f"More than anything, {pro['subj']} wants {fields['goal']}.",
        ])
        personality = " ".join([
            fill(k["arch"]["traits"], fields) + ".", fill(style["desc"], fields),
            f"{first} {fill(k['quirk']['habit'], fields)}.", f"Loves {fields['like']}; can't stand {fields['dislike']}.",
        ])
        blocks, used = self._dialogue(k, w)
        voice_line = fill(self.rng.choice(style["voice"]), fields)
        pace = style.get("pace") or PIPER_PACE[k["style_key"]]
        accents = era.get("accents") or ESPEAK_ACCENTS[k["era_key"]]
        tts = procedural_voice(self.rng, k["style_key"], pace, accents, w["gender"], w["age"], k["child"], k["robot"])
        genre = k["situation"]["genre"]
        tags = list(dict.fromkeys(era["tags"] + [genre, k["style_key"].replace("_", "-"), k["arch_key"], "procedural"]))
        return {
            "slug": w["slug"], "name": w["full"], "origin": "procedural",
            "description": description, "personality": personality, "scenario": k["situation"]["text"],
            "first_mes": fill(style["greet"], fields), "mes_example": "\n".join(blocks),
            "post_history_instructions": f"Stay in character as {{{{char}}}}: {style['post']}.",
            "tags": tags, "voice_line": voice_line, "tts": tts, "look": look,
            "composition": {"index": i, "era": k["era_key"], "place": k["place"]["place"], "role": k["role"]["role"],
                            "archetype": k["arch_key"], "speech_style": k["style_key"], "quirk": k["quirk_i"],
                            "situation": f"{k['era_key']}/{k['sit_i']} ({genre})", "gender": w["gender"], "age": w["age"],
                            **({"species": w["species"]} if w["species"] else {})},
            "parts": {"fields": fields, "style": style, "quirk": k["quirk"], "robot": k["robot"], "dialogue": used},
        }


def compose_procedural(comp: dict, taken_names: set[str], taken_slugs: set[str], *, seed: int = SEED,
                       count: int = N_PROCEDURAL) -> list[dict]:
    """The `count` procedural personas of data/personas (first names unique too); names and slugs join the taken sets."""
    composer = Composer(comp, taken_names, taken_slugs, seed=seed)
    return [composer.next() for _ in range(count)]

def procedural_voice(rng: random.Random, style: str, pace: float, accents: list[str], gender: str, age: int,
                     child: bool, robot: bool) -> dict:
    """The voice sample's recipe: Piper (joe) or espeak-ng settings, drawn from the style's pace and the era's accents."""
    if robot:
        return {"engine": "espeak-ng", "voice": f"{rng.choice(['en-us', 'en', 'en-gb'])}+{rng.choice(ESPEAK_VARIANTS['robot'])}",
                "speed": rng.randrange(135, 175, 5), "pitch": rng.randrange(20, 65, 5), "pitch_semitones": rng.choice([-2, -1, 0, 1])}
    if rng.random() < 0.5:  # Piper, joe voice
        if child:
            semis = rng.choice([4, 5])
        elif gender == "f":
            semis = rng.choice([2, 3, 4, 5])
        else:
            semis = rng.choice([-5, -4, -3, -2] if age >= 55 else [-3, -2, -1, 0, 1])
        return {"engine": "piper", "length_scale": round(pace + rng.choice([-0.05, 0.0, 0.05]), 2),
                "noise_scale": round(rng.randrange(30, 95, 5) / 100, 2), "pitch_semitones": semis}
    if style in ("riddling", "gloomy") and rng.random() < 0.5:
        variant = ESPEAK_VARIANTS["whisper_f" if gender == "f" else "whisper_m"][0]
    elif age >= 65 and rng.random() < 0.6:
        variant = rng.choice(ESPEAK_VARIANTS["old_" + gender])
    else:
        variant = rng.choice(ESPEAK_VARIANTS[gender])
    if child:
        pitch = rng.randrange(80, 100, 5)
    elif gender == "f":
        pitch = rng.randrange(50, 85, 5)
    else:
        pitch = rng.randrange(20, 55, 5)
    return {"engine": "espeak-ng", "voice": f"{rng.choice(accents)}+{variant}",
            "speed": int(round(170 / pace / 5) * 5) + rng.choice([-10, -5, 0, 5, 10]), "pitch": pitch,
            "pitch_semitones": rng.choice([-2, -1, 0, 0, 1, 2])}

