"""Tests of `explorer animate` on the synthetic OUT folder of tests/synthetic.py (no models).

They check what a viewer would: the number and size of frames in the GIF and MP4, that each
frame's leaderboard holds the images the timeline ranks lowest at that step (against a brute
force, and in the frame's pixels), byte-for-byte determinism, and the edge cases (a single
checkpoint, no labels, no training log, a bad suffix, no timeline). The options of issue 16
(`--leaderboard`, `--panel`) are checked against a synthetic OUT with dynamics columns and an
OUT/checkpoints table.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import datasets
import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image
from synthetic import CLASS_NAMES, write_synthetic_out

from explorer.animate import animate, frames, gif_frame
from explorer.cli import main
from explorer.draw import FrameRenderer, class_colors, layout
from explorer.errors import ExplorerError
from explorer.film import LEADERBOARDS, PANELS, leaderboard, load_film

SIZE = (640, 360)  # small frames keep the tests fast; the layout is the same at any size
STEPS = (0, 10, 20)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return write_synthetic_out(tmp_path_factory.mktemp("out") / "OUT", n_images=40, steps=STEPS)


@pytest.fixture(scope="module")
def timeline(out) -> dict[int, dict[str, np.ndarray]]:
    """The timeline read straight from disk, one dict of columns per step."""
    table = datasets.load_from_disk(str(out / "timeline")).to_pandas()
    return {
        int(step): {name: group[name].to_numpy() for name in group.columns}
        for step, group in table.groupby("step")
    }


def gif_frames(path: Path) -> np.ndarray:
    return iio.imread(path, index=None)


def brute_force(at_step: dict[str, np.ndarray], n: int) -> list[tuple[float, int]]:
    """The n lowest (score, row) pairs, by sorting every pair."""
    pairs = zip(at_step["outlier_score"].tolist(), at_step["row"].tolist(), strict=True)
    return sorted(pairs)[:n]


# --- frame count, formats, sizes ------------------------------------------------------------


@pytest.mark.parametrize("tween", [0, 2])
def test_gif_has_one_frame_per_checkpoint_plus_tween_frames(out, tmp_path, tween):
    path = animate(out, tmp_path / "film.gif", fps=5, size=SIZE, tween=tween, progress=False)
    expected = len(STEPS) + (len(STEPS) - 1) * tween
    assert load_film(out, tween=tween).n_frames == expected
    pixels = gif_frames(path)
    assert pixels.shape == (expected, SIZE[1], SIZE[0], 3)
    meta = iio.immeta(path)
    assert meta["loop"] == 0  # forever
    assert meta["duration"] == 200  # ms, from fps=5


def test_gif_frames_are_the_rendered_frames_in_order(out, tmp_path):
    film = load_film(out, tween=1)
    rendered = np.stack(list(frames(film, SIZE, workers=0))).astype(float)
    path = animate(out, tmp_path / "film.gif", size=SIZE, tween=1, progress=False, workers=2)
    decoded = gif_frames(path).astype(float)
    error = np.abs(decoded[:, None] - rendered[None]).mean(axis=(2, 3, 4))  # GIF i vs frame j
    assert error.argmin(axis=1).tolist() == list(range(film.n_frames))
    assert error.diagonal().max() < 0.5  # 256 colours per frame lose little


def test_mp4_reads_back_with_frame_count_and_size_rounded_to_16(out, tmp_path):
    path = animate(out, tmp_path / "film.mp4", fps=8, size=(500, 300), tween=1, progress=False)
    with imageio_v2.get_reader(path, format="FFMPEG") as reader:
        meta = reader.get_meta_data()
        shapes = [frame.shape for frame in reader]
    assert len(shapes) == len(STEPS) + (len(STEPS) - 1) * 1
    assert set(shapes) == {(304, 512, 3)}
    assert meta["size"] == (512, 304)
    assert meta["fps"] == pytest.approx(8)


def test_mp4_keeps_a_size_already_divisible_by_16(out, tmp_path):
    path = animate(out, tmp_path / "film.mp4", size=(640, 352), progress=False)
    with imageio_v2.get_reader(path, format="FFMPEG") as reader:
        assert reader.get_meta_data()["size"] == (640, 352)
        assert sum(1 for _ in reader) == len(STEPS)


# --- what each frame shows -------------------------------------------------------------------


def test_leaderboard_is_the_sorted_brute_force_with_ties_and_nans():
    rng = np.random.default_rng(3)
    scores = rng.choice([0.1, 0.2, 0.3, 0.5, np.nan], size=200)  # many ties
    rows = rng.permutation(200)
    for n in (1, 8, 500):
        got = leaderboard({"row": rows, "outlier_score": scores}, n)
        finite = {"row": rows[np.isfinite(scores)], "outlier_score": scores[np.isfinite(scores)]}
        assert [(e.score, e.row) for e in got] == brute_force(finite, n)
        assert [e.rank for e in got] == list(range(1, len(got) + 1))
    assert leaderboard({"row": rows, "outlier_score": scores}, 0) == []


def test_every_frame_holds_the_rows_the_timeline_ranks_lowest_at_its_step(out, timeline):
    tween = 2
    film = load_film(out, top_outliers=5, tween=tween)
    assert film.steps.tolist() == list(STEPS)
    for index in range(film.n_frames):
        frame = film.frame(index)
        step = STEPS[index // (tween + 1)]  # tween frames keep their checkpoint's leaderboard
        expected = brute_force(timeline[step], 5)
        assert [(e.score, e.row) for e in frame.leaders] == expected
        assert all(
            e.pred == timeline[step]["pred_label"][timeline[step]["row"] == e.row][0]
            for e in frame.leaders
        )


def test_positions_are_the_timeline_on_checkpoints_and_between_them_on_tween_frames(out, timeline):
    film = load_film(out, projection="umap", tween=3)
    for k, step in enumerate(STEPS):
        at_step = timeline[step]
        xy = film.frame(k * 4).xy
        np.testing.assert_array_equal(xy[at_step["row"], 0], at_step["umap_x"])
        np.testing.assert_array_equal(xy[at_step["row"], 1], at_step["umap_y"])
    start, middle, end = film.frame(0).xy, film.frame(2).xy, film.frame(4).xy
    np.testing.assert_allclose(middle, (start + end) / 2, atol=1e-5)  # eased, symmetric
    assert film.frame(2).step == pytest.approx(5.0)
    with pytest.raises(IndexError):
        film.frame(film.n_frames)


def test_thumbnails_in_a_rendered_frame_are_the_leaderboard_images(out):
    film = load_film(out, top_outliers=8)
    renderer = FrameRenderer(film, SIZE)
    default = datasets.load_from_disk(str(out / "default"))
    pixels = renderer.render(2)
    assert pixels.shape == (SIZE[1], SIZE[0], 3) and pixels.dtype == np.uint8
    leaders = film.frame(2).leaders
    assert len(leaders) == len(renderer.slots) == 8
    for slot, entry in zip(renderer.slots, leaders, strict=True):
        top, left, side = slot.thumb
        image = default[entry.row]["image"].convert("RGB")
        expected = np.asarray(image.resize((side, side), Image.Resampling.NEAREST))
        np.testing.assert_array_equal(pixels[top : top + side, left : left + side], expected)
    # The ranks' texts and scores agree with the leaderboard.
    assert [t.get_text() for t in renderer.rank_texts] == [str(e.rank) for e in leaders]
    assert [t.get_text() for t in renderer.label_texts] == [
        CLASS_NAMES[default[e.row]["label"]] for e in leaders
    ]
    assert renderer.score_texts[0].get_text() == f"{leaders[0].score:.4f}"
    # A wrong prediction at that checkpoint is named under the label.
    entry = leaders[0]
    label = default[entry.row]["label"]
    assert renderer._slot_texts(replace(entry, pred=label)) == (
        CLASS_NAMES[label],
        f"image #{entry.row}",
    )
    wrong = CLASS_NAMES[(label + 1) % 4]
    assert renderer._slot_texts(replace(entry, pred=(label + 1) % 4))[1].endswith(
        f"predicted {wrong}"
    )


def test_the_map_moves_between_frames_and_the_leaderboard_waits_for_the_checkpoint(out):
    film = load_film(out, tween=1)
    renderer = FrameRenderer(film, SIZE)
    bbox = renderer.map_axes.get_window_extent()
    rows = slice(SIZE[1] - int(bbox.y1) + 2, SIZE[1] - int(bbox.y0) - 2)
    columns = slice(int(bbox.x0) + 2, int(bbox.x1) - 2)
    first, between, second = (renderer.render(i) for i in range(3))
    assert (first[rows, columns] != between[rows, columns]).any(axis=-1).mean() > 0.005
    assert (between[rows, columns] != second[rows, columns]).any(axis=-1).mean() > 0.005
    top, left, side = renderer.slots[0].thumb
    thumbs = (slice(top, top + side), slice(left, left + side))
    np.testing.assert_array_equal(first[thumbs], between[thumbs])  # checkpoint 0's board
    assert film.frame(1).leaders == film.frame(0).leaders != film.frame(2).leaders
    assert renderer.render(0).tobytes() == first.tobytes()  # redrawing a frame is exact
    fresh = FrameRenderer(film, SIZE)  # no saved leaderboard layer to reuse
    assert fresh.render(1).tobytes() == between.tobytes()
    renderer.render(1)
    assert renderer.step_text.get_text() == "step 0 → 10"  # on the way
    renderer.render(2)
    assert renderer.step_text.get_text() == "step 10"
    assert renderer.epoch_text.get_text() == "epoch 0.50  ·  checkpoint 2 of 3"


def test_the_map_pixels_follow_the_checkpoint_positions(tmp_path):
    # Synthetic classes sit on a circle whose radius grows 1, 2, 3 with the checkpoints: the
    # spread of the coloured map pixels must grow with it (the axes stay fixed).
    out = write_synthetic_out(tmp_path / "OUT", n_images=400, steps=STEPS)
    film = load_film(out, top_outliers=1)
    renderer = FrameRenderer(film, SIZE)
    bbox = renderer.map_axes.get_window_extent()
    rows = slice(SIZE[1] - int(bbox.y1) + 3, SIZE[1] - int(bbox.y0) - 3)
    columns = slice(int(bbox.x0) + 3, int(bbox.x1) - 3)
    spreads = []
    for index in range(film.n_frames):
        pixels = renderer.render(index)[rows, columns].astype(int)
        drawn = np.concatenate([rows for _, rows in renderer.point_groups])
        assert sorted(drawn.tolist()) == list(range(400))  # every image, once
        for line, group in renderer.point_groups:
            np.testing.assert_array_equal(np.c_[line.get_data()], film.frame(index).xy[group])
        y, x = np.nonzero((255 - pixels).sum(axis=-1) > 60)  # points, not the white background
        spreads.append(np.hypot(x - x.mean(), y - y.mean()).mean())
    assert spreads[0] * 1.5 < spreads[1] and spreads[1] * 1.2 < spreads[2]


def test_points_are_coloured_by_class_with_a_legend(out):
    film = load_film(out)
    renderer = FrameRenderer(film, SIZE)
    labels = np.asarray(datasets.load_from_disk(str(out / "default"))["label"])
    palette = class_colors(len(CLASS_NAMES))
    for line, rows in renderer.point_groups:
        (label,) = set(labels[rows].tolist())  # one class per Line2D, in its colour
        np.testing.assert_allclose(to_rgba(line.get_color())[:3], palette[label, :3])
    # the last points drawn include every class: none is always painted under the others
    drawn = np.concatenate([rows for _, rows in renderer.point_groups])
    assert set(labels[drawn[-len(drawn) // 4 :]]) == set(labels)
    assert [t.get_text() for t in renderer.legend.get_texts()] == CLASS_NAMES
    assert renderer.map_axes.get_xlim() == pytest.approx(film.limits[:2])  # fixed for the film


# --- GIF palettes ----------------------------------------------------------------------------


def test_gif_frame_maps_every_pixel_to_its_nearest_palette_colour():
    rng = np.random.default_rng(0)
    pixels = np.full((90, 120, 3), 255, np.uint8)  # white, as the frames are
    pixels[20:70, 10:110] = rng.integers(0, 256, (50, 100, 3))  # ~5,000 colours: too many
    image = gif_frame(pixels)
    assert image.mode == "P"
    palette = np.asarray(image.getpalette(), float).reshape(-1, 3)
    chosen = palette[np.asarray(image)]
    brute = ((pixels[:, :, None, :] - palette[None, None]) ** 2).sum(-1).min(-1)
    np.testing.assert_array_equal(((pixels - chosen) ** 2).sum(-1), brute)
    assert (chosen[:20] == 255).all()  # white stays white


def test_gif_frame_keeps_a_frame_of_few_colours_exactly():
    colours = np.random.default_rng(1).integers(0, 256, (200, 3), dtype=np.uint8)
    blocks = np.arange(200).reshape(10, 20).repeat(6, 0).repeat(6, 1)  # 6x6 pixel blocks
    pixels = colours[blocks]
    decoded = np.asarray(gif_frame(pixels).convert("RGB"))
    np.testing.assert_array_equal(decoded, pixels)


# --- determinism -----------------------------------------------------------------------------


def test_two_gif_renders_are_byte_for_byte_equal_whatever_the_workers(out, tmp_path):
    a = animate(out, tmp_path / "a.gif", size=SIZE, tween=1, progress=False, workers=2)
    b = animate(out, tmp_path / "b.gif", size=SIZE, tween=1, progress=False, workers=2)
    c = animate(out, tmp_path / "c.gif", size=SIZE, tween=1, progress=False, workers=0)
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()


def test_frames_from_workers_equal_frames_drawn_here(out):
    film = load_film(out, tween=1)
    here = list(frames(film, SIZE, workers=0))
    there = list(frames(film, SIZE, workers=2))
    assert len(here) == len(there) == film.n_frames
    for a, b in zip(here, there, strict=True):
        np.testing.assert_array_equal(a, b)


def test_spawned_workers_build_their_own_renderer_and_draw_the_same(out, monkeypatch):
    # macOS and Windows have no fork: workers get the Film pickled and build the figure.
    film = load_film(out)
    here = list(frames(film, SIZE, workers=0))
    monkeypatch.setattr("multiprocessing.get_all_start_methods", lambda: ["spawn"])
    there = list(frames(film, SIZE, workers=1))
    for a, b in zip(here, there, strict=True):
        np.testing.assert_array_equal(a, b)


# --- edge cases ------------------------------------------------------------------------------


def test_a_single_checkpoint_animates_to_one_frame(tmp_path):
    out = write_synthetic_out(tmp_path / "OUT", n_images=12, steps=(0,))  # empty training log
    path = animate(out, tmp_path / "one.gif", size=SIZE, tween=3, progress=False)
    assert gif_frames(path).shape == (1, SIZE[1], SIZE[0], 3)
    mp4 = animate(out, tmp_path / "one.mp4", size=SIZE, tween=3, progress=False)
    with imageio_v2.get_reader(mp4, format="FFMPEG") as reader:
        assert sum(1 for _ in reader) == 1


def test_a_dataset_without_labels_animates_in_one_colour_without_legend(tmp_path):
    out = write_synthetic_out(tmp_path / "OUT", n_images=30, steps=(0, 5), labels=False)
    film = load_film(out)
    assert film.labels is None and film.pred_names == ()
    renderer = FrameRenderer(film, SIZE)
    renderer.render(1)
    assert renderer.legend is None
    assert len({line.get_color() for line, _ in renderer.point_groups}) == 1
    assert renderer.label_texts[0].get_text().startswith("image #")
    path = animate(out, tmp_path / "plain.gif", size=SIZE, progress=False)
    assert gif_frames(path).shape[0] == 2


def test_a_missing_training_log_still_animates(out, tmp_path):
    copy = tmp_path / "OUT"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "training_log")
    film = load_film(copy)
    assert film.loss.shape == (0, 2)
    assert gif_frames(animate(copy, tmp_path / "f.gif", size=SIZE, progress=False)).shape[0] == 3


def test_a_bad_suffix_is_a_one_line_error_and_writes_nothing(out, tmp_path):
    with pytest.raises(ExplorerError) as error:
        animate(out, tmp_path / "film.avi", progress=False)
    assert "\n" not in str(error.value)
    assert ".gif" in str(error.value) and ".mp4" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_timeline_names_build_run(tmp_path):
    out = write_synthetic_out(tmp_path / "OUT", n_images=10, steps=())
    with pytest.raises(ExplorerError, match="explorer build --run"):
        animate(out, tmp_path / "film.gif", progress=False)


@pytest.mark.parametrize(
    "arguments",
    [
        {"projection": "tsne"},
        {"top_outliers": 0},
        {"tween": -1},
        {"fps": 0},
        {"size": (100, 80)},
        {"panel": "f1"},
        {"leaderboard": "duplicates"},
    ],
)
def test_bad_arguments_are_explorer_errors(out, tmp_path, arguments):
    with pytest.raises(ExplorerError):
        animate(out, tmp_path / "film.gif", progress=False, **arguments)


def test_a_failed_render_leaves_no_file(out, tmp_path, monkeypatch):
    def broken(self, index):
        raise RuntimeError("boom")

    monkeypatch.setattr(FrameRenderer, "render", broken)
    with pytest.raises(RuntimeError):
        animate(out, tmp_path / "film.gif", size=SIZE, progress=False, workers=0)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_writes_the_film_and_reports_bad_input(out, tmp_path, capsys):
    path = tmp_path / "cli.gif"
    code = main(["animate", str(out), "--out", str(path), "--size", "640x360", "--quiet"])
    assert code == 0 and path.is_file()
    assert capsys.readouterr().out.strip() == str(path)
    assert main(["animate", str(out), "--out", str(tmp_path / "x.webm"), "--quiet"]) == 2
    assert "explorer: error:" in capsys.readouterr().err


def test_fewer_images_than_leaderboard_places(tmp_path):
    out = write_synthetic_out(tmp_path / "OUT", n_images=5, steps=(0, 10))
    film = load_film(out, top_outliers=8)
    renderer = FrameRenderer(film, SIZE)
    renderer.render(1)
    assert len(renderer.slots) == len(film.frame(1).leaders) == 5
    assert gif_frames(animate(out, tmp_path / "f.gif", size=SIZE, progress=False)).shape[0] == 2


# --- what the leaderboard ranks and which curve is shown (issue 16) ----------------------------

RANKED = {"outliers": ("outlier_score", 1), "label-issues": ("label_quality", 1)}
RANKED["moved"] = ("movement", -1)  # highest first


@pytest.fixture(scope="module")
def dynamic_out(tmp_path_factory) -> Path:
    """OUT with the timeline's movement and label_quality and an OUT/checkpoints table."""
    out = tmp_path_factory.mktemp("dynamic") / "OUT"
    return write_synthetic_out(out, n_images=40, steps=STEPS, dynamics=True)


@pytest.fixture(scope="module")
def dynamic_timeline(dynamic_out) -> dict[int, dict[str, np.ndarray]]:
    table = datasets.load_from_disk(str(dynamic_out / "timeline")).to_pandas()
    return {
        int(step): {name: group[name].to_numpy() for name in group.columns}
        for step, group in table.groupby("step")
    }


def ranked_brute_force(at_step: dict[str, np.ndarray], kind: str, n: int) -> list[tuple]:
    """The first n (value, row) pairs of `kind`'s board, by sorting every finite pair."""
    column, sign = RANKED[kind]
    pairs = [
        (sign * value, row)
        for value, row in zip(at_step[column].tolist(), at_step["row"].tolist(), strict=True)
        if np.isfinite(value)
    ]
    return [(sign * value, row) for value, row in sorted(pairs)[:n]]


@pytest.mark.parametrize("kind", LEADERBOARDS)
def test_leaderboard_ranks_by_the_chosen_column_with_ties_and_nans(kind):
    column, _ = RANKED[kind]
    rng = np.random.default_rng(4)
    values = rng.choice([0.0, 0.1, 0.5, 0.9, 1.0, np.nan], size=300)  # many ties
    rows = rng.permutation(300)
    for n in (1, 8, 1000):
        got = leaderboard({"row": rows, column: values}, n, kind=kind)
        at_step = {"row": rows, column: values}
        assert [(e.score, e.row) for e in got] == ranked_brute_force(at_step, kind, n)
        assert [e.rank for e in got] == list(range(1, len(got) + 1))


@pytest.mark.parametrize("kind", ["label-issues", "moved"])
def test_every_frame_holds_the_rows_its_leaderboard_ranks_first(
    dynamic_out, dynamic_timeline, kind
):
    tween = 1
    film = load_film(dynamic_out, top_outliers=6, tween=tween, leaderboard=kind)
    assert film.leaderboard == kind
    for index in range(film.n_frames):
        step = STEPS[index // (tween + 1)]
        expected = ranked_brute_force(dynamic_timeline[step], kind, 6)
        assert [(e.score, e.row) for e in film.frame(index).leaders] == expected
    # movement is NaN at the first checkpoint: nothing has moved, the board is empty.
    assert (film.boards[0] == ()) is (kind == "moved")
    assert all(len(board) == 6 for board in film.boards[1:])


@pytest.mark.parametrize(
    "kind, title, text",
    [
        ("outliers", "Top 6 outliers", lambda v: f"{v:.4f}"),
        ("label-issues", "Top 6 label issues", lambda v: f"p(label) {v:.4f}"),
        ("moved", "Top 6 moved", lambda v: f"moved {v:.2f}"),
    ],
)
def test_the_rendered_board_says_what_it_ranks_and_rings_its_rows(dynamic_out, kind, title, text):
    film = load_film(dynamic_out, top_outliers=6, leaderboard=kind)
    renderer = FrameRenderer(film, SIZE)
    renderer.render(2)
    leaders = film.frame(2).leaders
    assert title in [t.get_text() for t in renderer.figure.texts]
    assert [t.get_text() for t in renderer.score_texts] == [text(e.score) for e in leaders]
    assert renderer.board.note.get_text() == ""
    ring_xy = renderer.map.rings.get_offsets()
    np.testing.assert_array_equal(ring_xy, film.frame(2).xy[[e.row for e in leaders]])


def test_the_moved_board_of_the_first_checkpoint_is_empty_and_says_why(dynamic_out):
    film = load_film(dynamic_out, top_outliers=6, leaderboard="moved")
    renderer = FrameRenderer(film, SIZE)
    first = renderer.render(0)
    assert renderer.board.note.get_text() == "nothing has moved yet: first checkpoint"
    assert not any(t.get_visible() for t in renderer.rank_texts)
    assert np.isnan(np.asarray(renderer.map.rings.get_offsets(), float)).all()  # no rings
    top, left, side = renderer.slots[0].thumb
    assert (
        first[top : top + side, left : left + side]
        != renderer.render(1)[top : top + side, left : left + side]
    ).any()  # a thumbnail appears at the second checkpoint
    assert renderer.board.note.get_text() == ""


@pytest.mark.parametrize(
    "panel, column", [("accuracy", "accuracy"), ("knn-accuracy", "knn_accuracy")]
)
def test_the_panel_curve_is_the_checkpoints_column_with_the_step_marked(dynamic_out, panel, column):
    checkpoints = datasets.load_from_disk(str(dynamic_out / "checkpoints"))
    expected = np.c_[checkpoints["step"], np.asarray(checkpoints[column], np.float32)]
    film = load_film(dynamic_out, panel=panel, tween=1)
    np.testing.assert_array_equal(film.curve, expected)
    renderer = FrameRenderer(film, SIZE)
    np.testing.assert_array_equal(np.c_[renderer.curve.whole.get_data()], expected)
    for index in range(film.n_frames):
        renderer.render(index)
        frame = film.frame(index)
        now = np.interp(frame.step, expected[:, 0], expected[:, 1])
        done = np.c_[renderer.curve.done.get_data()]
        np.testing.assert_allclose(done[:-1], expected[expected[:, 0] <= frame.step])
        np.testing.assert_allclose(done[-1], [frame.step, now])
        np.testing.assert_allclose(np.c_[renderer.curve.now_dot.get_data()], [[frame.step, now]])
        assert renderer.curve.value_text.get_text() == f"{now:.3f} at step {round(frame.step)}"


def test_each_panel_draws_its_own_curve_and_leaves_the_rest_of_the_frame_alone(dynamic_out):
    rendered = {
        panel: FrameRenderer(load_film(dynamic_out, panel=panel), SIZE).render(1)
        for panel in PANELS
    }
    box = layout(SIZE).loss  # the curve's axes: its title and tick labels reach beyond them
    top, bottom = SIZE[1] - box.top - 30, SIZE[1] - box.bottom + 1
    inside = np.zeros(SIZE[::-1], bool)
    inside[top:bottom, box.left - 8 : box.right + 1] = True
    for a, b in [("loss", "accuracy"), ("loss", "knn-accuracy"), ("accuracy", "knn-accuracy")]:
        changed = (rendered[a] != rendered[b]).any(axis=-1)
        assert changed[inside].mean() > 0.01, (a, b)
        assert not changed[~inside].any(), (a, b)


def all_nan(out: Path, tmp_path: Path, table: str, column: str) -> Path:
    """A copy of `out` whose `table` has NaN for every value of `column` (a build without a
    head may write the column so)."""
    copy = tmp_path / f"{table}-{column}"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / table)
    data = datasets.load_from_disk(str(out / table))
    nan = data.map(lambda _: {column: float("nan")}, features=data.features)
    nan.save_to_disk(copy / table)
    return copy


def test_missing_panel_or_leaderboard_data_are_one_line_errors_naming_the_fix(
    out, dynamic_out, tmp_path
):
    unlabelled = write_synthetic_out(
        tmp_path / "plain", n_images=12, steps=STEPS, labels=False, dynamics=True
    )
    cases = [
        (out, {"panel": "accuracy"}, "checkpoints table"),
        (out, {"panel": "knn-accuracy"}, "explorer build --run"),
        (unlabelled, {"panel": "accuracy"}, "classification head"),
        (unlabelled, {"panel": "knn-accuracy"}, "labels"),
        (out, {"leaderboard": "moved"}, "movement"),
        (out, {"leaderboard": "label-issues"}, "label_quality"),
        (unlabelled, {"leaderboard": "label-issues"}, "classification head"),
        (
            all_nan(dynamic_out, tmp_path, "timeline", "label_quality"),
            {"leaderboard": "label-issues"},
            "classification head",
        ),
        (
            all_nan(dynamic_out, tmp_path, "checkpoints", "accuracy"),
            {"panel": "accuracy"},
            "classification head",
        ),
    ]
    for folder, options, fix in cases:
        with pytest.raises(ExplorerError) as error:
            load_film(folder, **options)
        assert "\n" not in str(error.value) and fix in str(error.value), options
    with pytest.raises(ExplorerError, match="accuracy"):
        animate(out, tmp_path / "film.gif", progress=False, panel="accuracy")
    assert not (tmp_path / "film.gif").exists()
    assert load_film(unlabelled, leaderboard="moved", panel="loss").boards[0] == ()


def test_the_cli_takes_panel_and_leaderboard(out, dynamic_out, tmp_path, capsys):
    path = tmp_path / "dynamics.gif"
    options = ["--panel", "knn-accuracy", "--leaderboard", "label-issues", "--size", "640x360"]
    assert main(["animate", str(dynamic_out), "--out", str(path), *options, "--quiet"]) == 0
    film = load_film(dynamic_out, panel="knn-accuracy", leaderboard="label-issues")
    rendered = np.stack(list(frames(film, SIZE, workers=0))).astype(float)
    assert np.abs(gif_frames(path).astype(float) - rendered).mean(axis=(1, 2, 3)).max() < 0.5
    capsys.readouterr()
    assert main(["animate", str(out), "--out", str(path), "--panel", "accuracy", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("explorer: error:") and error.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["animate", str(out), "--out", str(path), "--leaderboard", "bogus"])
