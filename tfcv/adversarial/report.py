"""The files `tfcv attack` writes besides results.json: tables and a grid.

Reference: Elsayed et al. (2018), "Adversarial Examples that Fool both
Computer Vision and Time-Limited Humans", arXiv:1802.08195: Tables
Supp.2-6 (top-1 accuracy, then accuracy and attack success per condition
on the ensemble members and on the held-out models), filled in for the
digits experiment of `tfcv.adversarial.experiment` with the numbers of
`tfcv.adversarial.scores`.

  tables.md  the paper's Tables Supp.2-6 as Tables 1-5, one number per
             group in a cell (`tables_markdown`)
  grid.png   columns of kept examples; rows image, adv, flip and the
             perturbation x10 on grey, then false examples (`grid_png`)

Shapes: `B` examples, `S` image side (tiles `[S, S, 1]` on [0, 255]),
`G` groups (2G coarse classes).

Deviations from the paper: None (those of the numbers are listed in
`tfcv.adversarial.scores`).
"""

import io

import numpy as np

from tfcv.adversarial import experiment

__all__ = ["grid_png", "tables_markdown"]

# Tiles of grid.png are scaled up this many times (nearest neighbour).
ZOOM = 3
# The perturbation row shows 128 + PERTURBATION_GAIN * δ.
PERTURBATION_GAIN = 10.0


def _cell(values):
    """`"100.0, 97.2"`: one percentage per group, `-` where none."""
    return ", ".join("-" if v is None else f"{v:.1f}" for v in values)


def _table(rows, header):
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# Tables 2-5: (title, role, columns); a column is (header, metric key).
_ACCURACY_COLUMNS = (
    ("image (%)", "image_accuracy_pct"),
    ("adv (%)", "adv_accuracy_pct"),
    ("flip (%)", "flip_accuracy_pct"),
)
_SUCCESS_COLUMNS = (
    ("adv (%)", "adv_success_pct"),
    ("flip (%)", "flip_success_pct"),
    ("flip changed (%)", "flip_changed_pct"),
    ("false (%)", "false_success_pct"),
)
_CONDITION_TABLES = (
    (
        "Table 2 (cf. Supp.3): accuracy of the ensemble members",
        "member",
        _ACCURACY_COLUMNS,
    ),
    (
        "Table 3 (cf. Supp.4): accuracy of the held-out models",
        "heldout",
        _ACCURACY_COLUMNS,
    ),
    (
        "Table 4 (cf. Supp.5): attack success on the ensemble members",
        "member",
        _SUCCESS_COLUMNS,
    ),
    (
        "Table 5 (cf. Supp.6): attack success on the held-out models",
        "heldout",
        _SUCCESS_COLUMNS,
    ),
)


def _top1_table(models):
    """Table 1 (cf. Supp.2): each classifier's top-1 accuracy."""
    rows = [
        [
            name,
            numbers["role"],
            "yes" if numbers["retina"] else "no",
            str(numbers["parameters"]),
            f"{numbers['accuracy_pct']:.1f}",
            f"{numbers['accuracy_rescaled_pct']:.1f}",
        ]
        for name, numbers in models.items()
    ]
    header = ["model", "role", "retina", "parameters", "top-1 (%)"]
    return _table(rows, header + ["top-1 [40, 215] (%)"])


def _condition_table(models, role, columns):
    """One of Tables 2-5: a row per classifier of `role`, cells per group."""
    rows = []
    for name, numbers in models.items():
        if numbers["role"] == role:
            per_group = numbers["per_group"]
            cells = [_cell([g[key] for g in per_group]) for _, key in columns]
            rows.append([name] + cells)
    if not rows:
        return "None.\n"
    return _table(rows, ["model"] + [header for header, _ in columns])


def tables_markdown(metrics, command, seconds):
    """tables.md: Tables Supp.2-6 of the paper for the digits."""
    counts = ", ".join(
        f"{g['group']} (adv kept {g['adv_kept']}/{g['adv_attempted']}, "
        f"false kept {g['false_kept']}/{g['false_attempted']})"
        for g in metrics["groups"]
    )
    order = ", ".join(g["group"] for g in metrics["groups"])
    text = [
        "# Adversarial examples on the digits (Elsayed et al. 2018, "
        "Tables Supp.2-6)\n",
        f"Command: `{command}`; run time {seconds:.0f} s.\n",
        f"Groups: {counts}. A cell holds one value per group, in the "
        f"order {order}; `-` where a group kept no example.\n",
        "Accuracy is coarse and two-way: the prediction restricted to the "
        "two classes of the image's group. Attack success: the coarse "
        "probability of the target class exceeds 1/2 (Eq. 6). flip "
        "changed: the two-way prediction differs from the image "
        "condition's. All on kept examples (image, adv and flip on the "
        "same images).\n",
        "## Table 1 (cf. Supp.2): top-1 accuracy on the held-out digits\n",
        _top1_table(metrics["models"]),
    ]
    for title, role, columns in _CONDITION_TABLES:
        text.append(f"## {title}\n")
        text.append(_condition_table(metrics["models"], role, columns))
    text.append(
        "Paper (ImageNet, Tables Supp.3-6): adv fools every member by "
        "construction; on the held-out models adv succeeds on 57-89 % of "
        "the images, flip on at most 1.5 %.\n"
    )
    return "\n".join(text)


def _tile(values):
    """A `[S, S, 1]` image on [0, 255] as a zoomed uint8 `[ZS, ZS]`."""
    grey = np.clip(np.round(values[..., 0]), 0, 255).astype(np.uint8)
    return np.kron(grey, np.ones([ZOOM, ZOOM], np.uint8))


def _pick(kept, keys, count):
    """Up to `count` kept indices, cycling over the distinct `keys`."""
    queues = {}
    for index in np.flatnonzero(kept):
        queues.setdefault(int(keys[index]), []).append(int(index))
    chosen = []
    while len(chosen) < count and any(queues.values()):
        for key in sorted(queues):
            if queues[key] and len(chosen) < count:
                chosen.append(queues[key].pop(0))
    return chosen


def _grid_block(attack, labels, targets, classes, count, rows):
    """`(captions, [(row label, tiles)])` for one attacked condition.

    `rows` names the rows: pairs of a label and a function from an
    example's index to its `[S, S, 1]` tile on [0, 255].
    """
    columns = _pick(attack.kept, targets, count)
    captions = [
        f"{labels[i]} to " + "+".join(str(d) for d in classes[targets[i]])
        for i in columns
    ]
    return captions, [
        (label, [tile(i) for i in columns]) for label, tile in rows
    ]


def _draw_grid(blocks, side):
    """PNG bytes: per block a caption line, then labelled rows of tiles."""
    from PIL import Image
    from PIL import ImageDraw
    from PIL import ImageFont

    gap, label_width, caption = 4, 64, 14
    columns = max([1] + [len(captions) for captions, _ in blocks])
    rows = sum(len(block_rows) for _, block_rows in blocks)
    height = rows * (side + gap) + len(blocks) * (caption + gap) + gap
    width = label_width + columns * (side + gap)
    picture = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=11)
    top = gap
    for captions, block_rows in blocks:
        for column, text in enumerate(captions or ["no kept example"]):
            left = label_width + column * (side + gap)
            draw.text((left, top), text, fill=0, font=font)
        top += caption + gap
        for label, tiles in block_rows:
            draw.text((2, top + side // 2 - 6), label, fill=0, font=font)
            for column, tile in enumerate(tiles):
                left = label_width + column * (side + gap)
                picture.paste(Image.fromarray(_tile(tile)), (left, top))
            top += side + gap
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def grid_png(result, count):
    """grid.png: kept adv examples (image, adv, flip, perturbation x10 on
    grey), then kept false examples (image, false, perturbation x10)."""
    classes = experiment.coarse_classes(result.config.groups)
    adv, false = result.adv, result.false

    def shown(delta):
        return 128.0 + PERTURBATION_GAIN * delta

    blocks = [
        _grid_block(
            adv,
            result.adv_labels,
            result.adv_targets,
            classes,
            count,
            [
                ("image", lambda i: adv.images[i]),
                ("adv", lambda i: adv.adversarial[i]),
                ("flip", lambda i: result.flip[i]),
                ("pert. x10", lambda i: shown(adv.perturbations[i])),
            ],
        ),
        _grid_block(
            false,
            result.false_labels,
            result.false_targets,
            classes,
            count,
            [
                ("false img", lambda i: false.images[i]),
                ("false", lambda i: false.adversarial[i]),
                ("pert. x10", lambda i: shown(false.perturbations[i])),
            ],
        ),
    ]
    return _draw_grid(blocks, adv.images.shape[1] * ZOOM)
