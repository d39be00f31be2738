"""Check every FoodieQA record before conversion; bad records are listed with their reasons, never dropped silently.

XTuner's dataset replaces a sample whose image fails to load by a random other one, and a malformed record
can crash a long training run hours in, so the course checks the data once, up front: fields, choices,
answer index, unique ``question_id``, and that each image exists and decodes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from .layout import CHOICE_COUNT, SIVQA_FILE, answer_index, load_sivqa

REQUIRED_FIELDS = ("question", "choices", "answer", "question_type", "question_id", "food_meta")
REQUIRED_FOOD_META = ("id", "food_name", "food_type", "food_file")

# The kinds of problem, in the order the report lists their counts.
MISSING_FIELD = "missing field"
WRONG_CHOICE_COUNT = "wrong choice count"
ANSWER_OUT_OF_RANGE = "answer not in 0..3"
DUPLICATE_ID = "duplicate question_id"
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image"
PROBLEM_KINDS = (MISSING_FIELD, WRONG_CHOICE_COUNT, ANSWER_OUT_OF_RANGE, DUPLICATE_ID, MISSING_IMAGE, UNREADABLE_IMAGE)


@dataclass(frozen=True)
class Problem:
    kind: str  # one of PROBLEM_KINDS
    detail: str


@dataclass
class BadRecord:
    index: int  # position in sivqa_tidy.json
    question_id: str | None
    problems: list[Problem]

    def describe(self) -> str:
        return f"record {self.index} ({self.question_id or 'no id'}): " + "; ".join(p.detail for p in self.problems)


@dataclass
class ValidationReport:
    root: Path
    total: int
    valid_records: list[dict]
    bad_records: list[BadRecord]
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # food_file -> (width, height)

    @property
    def skipped(self) -> int:
        return len(self.bad_records)

    def problem_counts(self) -> dict[str, int]:
        """How many records have each kind of problem (a record with two kinds counts under both)."""
        counts = Counter(kind for bad in self.bad_records for kind in {p.kind for p in bad.problems})
        return {kind: counts[kind] for kind in PROBLEM_KINDS if counts[kind]}

    def summary(self) -> str:
        """A readable report: totals, counts per problem, then every bad record with its reasons."""
        lines = [f"{self.root / SIVQA_FILE}: {self.total} records, {len(self.valid_records)} valid, "
                 f"{self.skipped} skipped"]
        lines += [f"  {kind}: {count}" for kind, count in self.problem_counts().items()]
        lines += [f"  - {bad.describe()}" for bad in self.bad_records]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The report as plain JSON-ready data (written next to the converted files)."""
        return {
            "source": str(self.root / SIVQA_FILE),
            "total": self.total,
            "valid": len(self.valid_records),
            "skipped": self.skipped,
            "problem_counts": self.problem_counts(),
            "bad_records": [
                {"index": b.index, "question_id": b.question_id, "problems": [p.__dict__ for p in b.problems]}
                for b in self.bad_records
            ],
        }


def _missing(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def field_problems(record: dict) -> list[Problem]:
    """Problems in the record's own fields (everything but the image file)."""
    missing = [name for name in REQUIRED_FIELDS if _missing(record.get(name))]
    meta = record.get("food_meta")
    if isinstance(meta, dict):
        missing += [f"food_meta.{name}" for name in REQUIRED_FOOD_META if _missing(meta.get(name))]
        # ids, names and paths become dictionary keys and file paths: a list or an object there is as good as missing
        missing += [f"food_meta.{name} (a {type(meta[name]).__name__})" for name in REQUIRED_FOOD_META
                    if not _missing(meta.get(name)) and not isinstance(meta[name], (str, int))]
    elif meta is not None:
        missing.append("food_meta (not an object)")
    problems = [Problem(MISSING_FIELD, f"missing field {name}") for name in missing]
    choices = record.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not all(isinstance(c, str) and c.strip() for c in choices):
            problems.append(Problem(WRONG_CHOICE_COUNT, "choices must be a list of non-empty strings"))
        elif len(choices) != CHOICE_COUNT:
            problems.append(Problem(WRONG_CHOICE_COUNT, f"{len(choices)} choices, expected {CHOICE_COUNT}"))
    if record.get("answer") is not None:
        try:
            answer_index(record)
        except ValueError as error:
            problems.append(Problem(ANSWER_OUT_OF_RANGE, str(error)))
    return problems


def check_image(root: Path, food_file: str) -> tuple[tuple[int, int] | None, Problem | None]:
    """(width, height) of a readable image, or the problem; the image is fully decoded to catch truncation."""
    relative = PurePosixPath(str(food_file).replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts:
        return None, Problem(MISSING_IMAGE, f"image path {food_file!r} leaves the data folder")
    path = root / relative
    if not path.is_file():
        return None, Problem(MISSING_IMAGE, f"image not found: {food_file}")
    try:
        with Image.open(path) as image:
            size = image.size
            image.draft("RGB", (64, 64))  # JPEG decodes at 1/8 scale: fast, and still reads every byte
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return None, Problem(UNREADABLE_IMAGE, f"image unreadable: {food_file} ({error})")
    return size, None


def validate_foodieqa(root: str | Path) -> ValidationReport:
    """Check every record of ``root/sivqa_tidy.json``; the report holds the valid records and each bad one's reasons."""
    from tqdm.auto import tqdm

    root = Path(root)
    records = load_sivqa(root)
    image_checks: dict[str, tuple[tuple[int, int] | None, Problem | None]] = {}  # each image is decoded once
    first_index_of_id: dict[str, int] = {}
    valid, bad = [], []
    for index, record in enumerate(tqdm(records, desc="validating FoodieQA", unit="record")):
        if not isinstance(record, dict):
            kind = type(record).__name__
            bad.append(BadRecord(index, None, [Problem(MISSING_FIELD, f"record is a {kind}, not an object")]))
            continue
        problems = field_problems(record)
        question_id = record.get("question_id") if isinstance(record.get("question_id"), str) else None
        if question_id in first_index_of_id:
            first = first_index_of_id[question_id]
            problems.append(Problem(DUPLICATE_ID, f"duplicate question_id {question_id!r} (first at record {first})"))
        elif question_id is not None:
            first_index_of_id[question_id] = index
        meta = record.get("food_meta")
        food_file = meta.get("food_file") if isinstance(meta, dict) else None
        if isinstance(food_file, str) and food_file.strip():
            if food_file not in image_checks:
                image_checks[food_file] = check_image(root, food_file)
            problems += [image_checks[food_file][1]] if image_checks[food_file][1] else []
        if problems:
            bad.append(BadRecord(index, question_id, problems))
        else:
            valid.append(record)
    sizes = {name: size for name, (size, _) in image_checks.items() if size is not None}
    return ValidationReport(root.resolve(), len(records), valid, bad, sizes)
