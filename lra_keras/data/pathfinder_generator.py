"""A seeded Pathfinder generator (numpy + Pillow) writing the LRA release layout.

An independent implementation of the dashed-contour images of Linsley, Kim et al. (2018;
drewlinsley/pathfinder, summarised in reference/pathfinder_generator.md): two target snakes
seeded `seed_distance` apart, distractor snakes, and two markers. Label 1: the markers sit on
the two ends of one snake; label 0: on an end of each target snake.

Drawing is analytic and vectorised: each dash (paddle) is a segment whose pixel coverage is
`clip(half_width + 0.5 - distance, 0, 1)`, computed on a small window around it; the occupancy
mask (no snake may touch another) is the same distance field thresholded at `margin` more.
Differences from the original, by design: strokes are anti-aliased analytically instead of drawn
at `antialias` times the size and Lanczos-resized (the stroke width is still rounded at that
scale); candidate directions are whole degrees within the turning limit; a snake's last dash
is exempt from its own next dash's overlap test (consecutive dashes are separated by the gap);
the two target snakes are seeded together but grown one after the other, and a dead end undoes
the last dash (up to 10 times) before the pair is abandoned, which makes 64 px images (long
snakes in a small window) about 4x faster to generate.

Every image draws from `np.random.default_rng([seed, index])`, and the labels from a seeded
permutation (exactly balanced), so the output does not depend on the number of workers.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from PIL import Image

from lra_keras.data.output_folder import check_output, claim_output, finish_output, writing
from lra_keras.data.tasks import DIFFICULTY_DIRS
from lra_keras.errors import UserError

DIFFICULTY_CONTOUR_LENGTH = {"easy": 6, "intermediate": 9, "hard": 14}

# Per-resolution parameters of the LRA TFDS builders' docstrings; values they do not give take
# the snakes2_wrapper defaults (paddle_length 5, seed_distance 27, padding 22).
# `distractor_budget` K: distractor_length = contour_length / 3 and num_distractors =
# K / distractor_length (both rounded down).
_PARAMS = {
    32: dict(
        padding=1,
        paddle_length=2,
        marker_radius=1.5,
        paddle_thickness=0.5,
        antialias=2,
        seed_distance=7,
        continuity=1.0,
        paddle_margins=(1,),
        snake_contrast=2.0,
        distractor_budget=20,
    ),
    64: dict(
        padding=1,
        paddle_length=5,
        marker_radius=2.5,
        paddle_thickness=1.0,
        antialias=2,
        seed_distance=12,
        continuity=1.8,
        paddle_margins=(1,),
        snake_contrast=0.8,
        distractor_budget=22,
    ),
    128: dict(
        padding=1,
        paddle_length=5,
        marker_radius=3.0,
        paddle_thickness=1.5,
        antialias=2,
        seed_distance=20,
        continuity=1.8,
        paddle_margins=(2, 3),
        snake_contrast=0.9,
        distractor_budget=35,
    ),
    256: dict(
        padding=22,
        paddle_length=5,
        marker_radius=5.0,
        paddle_thickness=2.0,
        antialias=2,
        seed_distance=27,
        continuity=1.8,
        paddle_margins=(3,),
        snake_contrast=1.0,
        distractor_budget=30,
    ),
}

_MAX_PADDLE_RETRIAL = 4
_MAX_PAIR_RETRIAL = 8
_MAX_BACKTRACK = 10


def pathfinder_params(resolution: int, difficulty: str = "hard") -> dict:
    """The generator parameters for one resolution (32, 64, 128, 256) and difficulty."""
    if resolution not in _PARAMS:
        raise UserError(f"resolution must be one of {sorted(_PARAMS)}, got {resolution!r}.")
    if difficulty not in DIFFICULTY_CONTOUR_LENGTH:
        raise UserError(
            f"difficulty must be one of {list(DIFFICULTY_CONTOUR_LENGTH)}, got {difficulty!r}."
        )
    params = dict(_PARAMS[resolution], resolution=resolution, difficulty=difficulty)
    contour = DIFFICULTY_CONTOUR_LENGTH[difficulty]
    params["contour_length"] = contour
    params["distractor_length"] = max(1, contour // 3)
    params["num_distractor_snakes"] = int(params.pop("distractor_budget") / (contour / 3))
    return params


class _Canvas:
    """The image, the committed occupancy and each snake's not yet committed last dash."""

    def __init__(self, params: dict, margin: float, rng: np.random.Generator):
        self.p = params
        self.size = params["resolution"]
        self.rng = rng
        self.margin = margin
        aa = params["antialias"]
        self.half_width = max(round(params["paddle_thickness"] * aa), 1) / (2 * aa)
        self.image = np.zeros((self.size, self.size), np.float32)
        self.occupied = np.zeros((self.size, self.size), bool)
        self.pending: dict[int, tuple] = {}
        lo = params["padding"] + self.half_width
        self.lo, self.hi = lo, self.size - 1 - lo

    def _window(self, x0, y0, x1, y1, reach):
        c0 = max(int(math.floor(min(x0, x1) - reach)), 0)
        c1 = min(int(math.ceil(max(x0, x1) + reach)) + 1, self.size)
        r0 = max(int(math.floor(min(y0, y1) - reach)), 0)
        r1 = min(int(math.ceil(max(y0, y1) + reach)) + 1, self.size)
        ys = np.arange(r0, r1, dtype=np.float64)[:, None]
        xs = np.arange(c0, c1, dtype=np.float64)[None, :]
        dx, dy = x1 - x0, y1 - y0
        t = ((xs - x0) * dx + (ys - y0) * dy) / max(dx * dx + dy * dy, 1e-12)
        t = np.clip(t, 0.0, 1.0)
        dist = np.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy))
        return (slice(r0, r1), slice(c0, c1)), dist

    def inside(self, x, y):
        return (x >= self.lo) & (x <= self.hi) & (y >= self.lo) & (y <= self.hi)

    def blocked(self, snake: int):
        """Occupancy seen by `snake`: committed dashes and other snakes' pending dashes."""
        blocked = self.occupied
        for other, (win, mask) in self.pending.items():
            if other != snake:
                blocked = blocked.copy()
                blocked[win] |= mask
        return blocked

    def fits(self, seg, blocked) -> bool:
        x0, y0, x1, y1 = seg
        lo, hi = self.lo, self.hi
        if not (lo <= x0 <= hi and lo <= y0 <= hi and lo <= x1 <= hi and lo <= y1 <= hi):
            return False
        win, dist = self._window(x0, y0, x1, y1, self.half_width + 1)
        return not np.any(blocked[win][dist < self.half_width + 0.5])

    def draw(self, snake: int, seg, contrast: float):
        x0, y0, x1, y1 = seg
        reach = self.half_width + self.margin + 1
        win, dist = self._window(x0, y0, x1, y1, reach)
        cover = np.clip(self.half_width + 0.5 - dist, 0.0, 1.0) * contrast
        np.maximum(self.image[win], np.minimum(cover, 1.0), out=self.image[win])
        self.commit(snake)
        self.pending[snake] = (win, dist < self.half_width + 0.5 + self.margin)

    def commit(self, snake: int):
        if snake in self.pending:
            win, mask = self.pending.pop(snake)
            self.occupied[win] |= mask

    def snapshot(self):
        return self.image.copy(), self.occupied.copy(), dict(self.pending)

    def restore(self, snapshot):
        image, occupied, pending = snapshot
        self.image, self.occupied, self.pending = image.copy(), occupied.copy(), dict(pending)

    def disk(self, x, y, radius):
        win, dist = self._window(x, y, x, y, radius + 1)
        cover = np.clip(radius + 0.5 - dist, 0.0, 1.0)
        np.maximum(self.image[win], cover, out=self.image[win])


class _Snake:
    def __init__(self, index: int):
        self.index = index
        self.paddles: list[tuple[float, float, float, float]] = []
        self.angle = 0.0


def _segment(x, y, angle, length):
    return (x, y, x + length * math.cos(angle), y + length * math.sin(angle))


def _seed(canvas, snake, x, y, angle) -> bool:
    seg = _segment(x, y, angle, canvas.p["paddle_length"])
    if not canvas.fits(seg, canvas.blocked(snake.index)):
        return False
    canvas.draw(snake.index, seg, canvas.p["snake_contrast"])
    snake.paddles.append(seg)
    snake.angle = angle
    return True


_TURN_TABLES: dict[float, tuple] = {}


def _turn_table(continuity: float):
    """Candidate turns (whole degrees below the limit), their weights, cosines and sines."""
    if continuity not in _TURN_TABLES:
        turns = np.deg2rad(np.arange(-89, 90, dtype=np.float64))
        turns = turns[np.abs(turns) * continuity < np.pi / 2]
        weights = np.cos(np.minimum(np.abs(turns) * continuity, np.pi / 2)) ** 2
        _TURN_TABLES[continuity] = (turns, weights, np.cos(turns), np.sin(turns))
    return _TURN_TABLES[continuity]


def _extend(canvas, snake) -> bool:
    """Adds one dash after the snake's head, turning by a continuity-weighted random angle."""
    p = canvas.p
    turns, weights, cos_t, sin_t = _turn_table(p["continuity"])
    angles = snake.angle + turns
    ca, sa = math.cos(snake.angle), math.sin(snake.angle)
    cos_a, sin_a = ca * cos_t - sa * sin_t, sa * cos_t + ca * sin_t
    _, _, hx, hy = snake.paddles[-1]
    gap, length = 2 * canvas.margin, p["paddle_length"]
    tx, ty = hx + gap * cos_a, hy + gap * sin_a
    ex, ey = tx + length * cos_a, ty + length * sin_a
    blocked = canvas.blocked(snake.index)
    ok = canvas.inside(tx, ty) & canvas.inside(ex, ey)
    rows = np.clip(np.rint(ey), 0, canvas.size - 1).astype(int)
    cols = np.clip(np.rint(ex), 0, canvas.size - 1).astype(int)
    weights = weights * ok * ~blocked[rows, cols]
    for _ in range(_MAX_PADDLE_RETRIAL):
        total = weights.sum()
        if total <= 0:
            return False
        k = int(np.searchsorted(np.cumsum(weights), canvas.rng.random() * total, side="right"))
        k = min(k, len(weights) - 1)
        seg = (float(tx[k]), float(ty[k]), float(ex[k]), float(ey[k]))
        if canvas.fits(seg, blocked):
            canvas.draw(snake.index, seg, p["snake_contrast"])
            snake.paddles.append(seg)
            snake.angle = float(angles[k])
            return True
        weights[k] = 0.0
    return False


def _grow(canvas, snake, length: int, backtracks: int) -> bool:
    """Extends `snake` to `length` dashes; a dead end undoes the last dash and tries again."""
    states = []
    while len(snake.paddles) < length:
        state = (canvas.snapshot(), snake.angle)
        if _extend(canvas, snake):
            states.append(state)
            continue
        if backtracks == 0 or not states:
            return False
        backtracks -= 1
        snapshot, snake.angle = states.pop()
        canvas.restore(snapshot)
        snake.paddles.pop()
    return True


def _random_angle(rng) -> float:
    return math.radians(int(rng.integers(-180, 180)))


def _target_pair(params, margin, rng):
    """Two complete target snakes whose first dashes start `seed_distance` apart, or None."""
    size = params["resolution"]
    band = min(2 * params["seed_distance"], size // 2 - 2)
    canvas = _Canvas(params, margin, rng)
    a, b = _Snake(0), _Snake(1)
    x = float(rng.integers(band, size - band))
    y = float(rng.integers(band, size - band))
    if not _seed(canvas, a, x, y, _random_angle(rng)):
        return None
    offset = _random_angle(rng)
    bx = x + params["seed_distance"] * math.cos(offset)
    by = y + params["seed_distance"] * math.sin(offset)
    if not _seed(canvas, b, bx, by, _random_angle(rng)):
        return None
    for snake in (a, b):
        if not _grow(canvas, snake, params["contour_length"], _MAX_BACKTRACK):
            return None
    canvas.commit(0)
    canvas.commit(1)
    return canvas, [a, b]


def generate_pathfinder(
    resolution: int = 32,
    difficulty: str = "hard",
    seed: int = 0,
    index: int = 0,
    label: int | None = None,
) -> tuple[np.ndarray, dict]:
    """Generates one Pathfinder image and its ground truth.

    Args:
        resolution: 32, 64, 128 or 256.
        difficulty: "easy", "intermediate" or "hard" (contour length 6, 9, 14).
        seed, index: the image draws from `np.random.default_rng([seed, index])`.
        label: 1 (markers on the two ends of one snake) or 0 (on ends of the two target
            snakes); default: drawn from the same generator.

    Returns:
        `(image, truth)`: uint8 `[resolution, resolution]` and a dict with `label`, `snakes`
        (per snake, its dashes as `[x0, y0, x1, y1]` in pixel coordinates, column then row;
        the first two are the targets), `markers` (two `[x, y]` centres) and `marker_snakes`,
        `marker_ends` (which snake and which end, "origin" or "terminal", each marker sits on),
        `margin` and `half_width`.
    """
    params = pathfinder_params(resolution, difficulty)
    for name, value in (("seed", seed), ("index", index)):
        _check_int(name, value, 0)
    rng = np.random.default_rng([seed, index])
    if label is None:
        label = int(rng.integers(2))
    if label not in (0, 1):
        raise ValueError(f"label must be 0, 1 or None, got {label!r}.")
    margin = float(rng.choice(params["paddle_margins"]))
    for _ in range(1000):
        pair = None
        for _ in range(_MAX_PAIR_RETRIAL):
            pair = _target_pair(params, margin, rng)
            if pair is not None:
                break
        if pair is not None:
            break
    else:
        raise RuntimeError(f"Could not place the target snakes (resolution {resolution}).")
    canvas, snakes = pair
    for i in range(params["num_distractor_snakes"]):
        snake = _Snake(2 + i)
        size = params["resolution"]
        for _ in range(20):
            x, y = rng.uniform(0, size - 1, 2)
            if _seed(canvas, snake, float(x), float(y), _random_angle(rng)):
                break
        else:
            continue
        for _ in range(params["distractor_length"] - 1):
            if not _extend(canvas, snake):
                break  # distractors may stay incomplete
        canvas.commit(snake.index)
        snakes.append(snake)
    first = int(rng.integers(2))
    second = first if label == 1 else 1 - first
    origin = snakes[first].paddles[0][:2]
    terminal = snakes[second].paddles[-1][2:]
    for x, y in (origin, terminal):
        canvas.disk(x, y, params["marker_radius"])
    image = np.rint(canvas.image * 255.0).astype(np.uint8)
    truth = {
        "label": int(label),
        "snakes": [[list(map(float, s)) for s in snake.paddles] for snake in snakes],
        "markers": [list(map(float, origin)), list(map(float, terminal))],
        "marker_snakes": [first, second],
        "marker_ends": ["origin", "terminal"],
        "margin": margin,
        "half_width": canvas.half_width,
    }
    return image, truth


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UserError(f"{name} must be an int >= {minimum}, got {value!r}.")


def balanced_labels(num_images: int, seed: int) -> np.ndarray:
    """Exactly balanced labels (num_images // 2 ones) in a seeded random order."""
    order = np.random.default_rng([seed, 2**31]).permutation(num_images)
    return (order < num_images // 2).astype(np.int64)


_GENERATOR = "lra-data pathfinder"


def _save_png(image: np.ndarray, path: str) -> None:
    Image.fromarray(image).save(path)


def _work(task):
    out_root, resolution, difficulty, seed, folder, start, stop, per_folder, labels = task
    params = pathfinder_params(resolution, difficulty)
    img_dir = os.path.join(out_root, "imgs", str(folder))
    os.makedirs(img_dir, exist_ok=True)
    rows, truths = [], []
    for offset, index in enumerate(range(start, stop)):
        image, truth = generate_pathfinder(resolution, difficulty, seed, index, int(labels[offset]))
        n = index - folder * per_folder
        path = os.path.join(img_dir, f"sample_{n}.png")
        with writing(path, out_root, _GENERATOR):
            _save_png(image, path)
        rows.append(
            f"imgs/{folder} sample_{n}.png {n} {truth['label']} {params['continuity']} "
            f"{params['contour_length']} {params['distractor_length']} "
            f"{params['paddle_length']} {params['paddle_thickness']} {truth['margin']:g} 1"
        )
        truths.append({"file": f"imgs/{folder}/sample_{n}.png", **truth})
    return folder, rows, truths


def write_pathfinder(
    out_dir: str,
    resolution: int = 32,
    difficulty: str = "hard",
    num_images: int = 1000,
    seed: int = 0,
    workers: int = 1,
    images_per_folder: int = 1000,
    overwrite: bool = False,
) -> str:
    """Writes `<out_dir>/<difficulty dir>/imgs/<k>/sample_<n>.png` and `metadata/<k>.npy`.

    The metadata files are text, one row per image as in the release:
    `imgs/<k> sample_<n>.png <n> <label> <continuity> <contour_length> <distractor_length>
    <paddle_length> <paddle_thickness> <margin> 1`. Each image's ground truth (see
    `generate_pathfinder`) goes to `truth/<k>.json`. Returns the difficulty folder.

    The difficulty folder must be empty or new (other difficulties may sit beside it in
    `out_dir`, as in the release); with `overwrite`, one an earlier `write_pathfinder`
    generated (it carries the `.lra_data.json` marker) is replaced whole, so no metadata file
    of the earlier run is left to mix with the new one; any other non-empty folder is refused.
    """
    pathfinder_params(resolution, difficulty)
    _check_int("seed", seed, 0)
    for name, value in (
        ("num_images", num_images),
        ("workers", workers),
        ("images_per_folder", images_per_folder),
    ):
        _check_int(name, value, 1)
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir} exists and is not a folder; choose a folder.")
    root = os.path.join(out_dir, DIFFICULTY_DIRS[difficulty])
    check_output(root, overwrite)
    arguments = dict(
        resolution=resolution,
        difficulty=difficulty,
        num_images=num_images,
        seed=seed,
        images_per_folder=images_per_folder,
    )
    claim_output(root, overwrite, _GENERATOR, arguments)
    labels = balanced_labels(num_images, seed)
    chunk = max(1, min(images_per_folder, 100))
    tasks = []
    start = 0
    while start < num_images:  # chunks of at most `chunk` images that never straddle folders
        folder = start // images_per_folder
        stop = min(start + chunk, num_images, (folder + 1) * images_per_folder)
        task = (root, resolution, difficulty, seed, folder, start, stop, images_per_folder)
        tasks.append((*task, labels[start:stop]))
        start = stop
    if workers == 1:
        _collect(root, map(_work, tasks))
    else:
        import multiprocessing

        # Spawned workers import only numpy and Pillow (the package's __init__ is lazy).
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            _collect(root, pool.imap(_work, tasks))
    finish_output(root)
    return root


def _collect(root, results) -> str:
    meta_dir = os.path.join(root, "metadata")
    truth_dir = os.path.join(root, "truth")
    os.makedirs(meta_dir, exist_ok=True)
    os.makedirs(truth_dir, exist_ok=True)
    rows: dict[int, list[str]] = {}
    truths: dict[int, list[dict]] = {}
    for folder, r, t in results:
        rows.setdefault(folder, []).extend(r)
        truths.setdefault(folder, []).extend(t)
    for folder in sorted(rows):
        path = os.path.join(meta_dir, f"{folder}.npy")
        with writing(path, root, _GENERATOR), open(path, "w") as f:
            f.write("\n".join(rows[folder]) + "\n")
        path = os.path.join(truth_dir, f"{folder}.json")
        with writing(path, root, _GENERATOR), open(path, "w") as f:
            json.dump(truths[folder], f)
    return root
