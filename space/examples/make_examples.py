"""Render the sample images of the package (`espcn_hf/assets/`) and the Space's example clip; this script is not
part of the Space upload.

    python space/examples/make_examples.py          # both
    python space/examples/make_examples.py assets   # the package's sample images only
    python space/examples/make_examples.py clip     # space/examples/bsd100_3096_pan.mp4 only (needs PyAV)

The sample images are drawn procedurally here (PIL + numpy, fixed seeds), so there is no third-party content and
the files can be rebuilt bit for bit. Each has structure that super-resolution must get right: edges and text (a
test chart), fine fractal detail (a Julia set), smooth gradients next to sharp silhouettes (a landscape), periodic
texture (tiles).

The Space's example photos are real photos from the standard benchmark sets (see space/README.md). Its example
clip for the video tab is cut from one of them, `bsd100_3096.png` (the airplane): a 160x120 window pans across
the photo following the aircraft, 2 s at 15 fps, H.264 (one encoder thread, so the same FFmpeg build rebuilds the
same bytes). Nothing is resampled: every frame is a crop of the photo.
"""

from __future__ import annotations

import argparse
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parents[1] / "espcn_hf" / "assets"
CLIP = HERE / "bsd100_3096_pan.mp4"
CLIP_SOURCE = HERE / "bsd100_3096.png"
# The pan: a window of CLIP_SIZE (width, height) whose top-left corner moves from CLIP_START to CLIP_END.
CLIP_SIZE = (160, 120)
CLIP_START, CLIP_END = (300, 110), (150, 150)
CLIP_RATE, CLIP_FRAMES = 15, 30


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def test_chart(width: int = 288, height: int = 216) -> Image.Image:
    """A resolution chart (laid out for 288x216): a Siemens star, line gratings, text of 9-30 px, colour patches."""
    image = Image.new("RGB", (width, height), (238, 236, 230))
    draw = ImageDraw.Draw(image)
    # Siemens star: 36 black/white sectors, detail grows towards the centre.
    cx, cy, radius = 70, 78, 60
    for k in range(36):
        if k % 2 == 0:
            a0, a1 = 2 * math.pi * k / 36, 2 * math.pi * (k + 1) / 36
            points = [(cx, cy)] + [
                (
                    cx + radius * math.cos(a0 + (a1 - a0) * t / 8),
                    cy + radius * math.sin(a0 + (a1 - a0) * t / 8),
                )
                for t in range(9)
            ]
            draw.polygon(points, fill=(20, 20, 24))
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=(20, 20, 24), width=2)
    # Gratings of 1, 2 and 3 px lines, vertical and horizontal.
    for i, period in enumerate((2, 4, 6)):
        x0 = 150 + i * 44
        for x in range(x0, x0 + 36, period):
            draw.line((x, 20, x, 60), fill=(30, 30, 30), width=period // 2)
        for y in range(70, 106, period):
            draw.line((x0, y, x0 + 35, y), fill=(30, 30, 30), width=period // 2)
    # Text at several sizes.
    y = 146
    for size, text in (
        (9, "ESPCN sub-pixel convolution 0123456789"),
        (14, "Super-Resolution x2 x3 x4"),
        (24, "Aa Bb Qq 8"),
        (30, "espcn"),
    ):
        draw.text(
            (8 if size < 28 else 160, y if size < 28 else 112), text, fill=(15, 15, 60), font=_font(size)
        )
        y += size + 6
    # Colour patches with hard edges.
    colours = [(200, 30, 40), (30, 160, 60), (30, 70, 200), (240, 200, 30), (140, 40, 160)]
    for i, colour in enumerate(colours):
        draw.rectangle((150 + i * 26, 190 - 14, 170 + i * 26, 208), fill=colour)
    return image


def julia(width: int = 256, height: int = 192, c: complex = complex(-0.8, 0.156)) -> Image.Image:
    """A Julia set with smooth escape-time colouring: detail at every scale."""
    y, x = np.mgrid[-1.0 : 1.0 : height * 1j, -1.45 : 1.45 : width * 1j]
    z = x + 1j * y
    count = np.zeros(z.shape)
    alive = np.ones(z.shape, dtype=bool)
    for i in range(120):
        z[alive] = z[alive] ** 2 + c
        escaped = alive & (np.abs(z) > 4)
        count[escaped] = i + 1 - np.log2(np.log(np.abs(z[escaped])))
        alive &= ~escaped
    t = np.where(alive, 0.0, np.sqrt(count / 120))
    rgb = np.stack(
        [
            0.5 + 0.5 * np.cos(6.2 * t + 0.0),
            0.5 + 0.5 * np.cos(6.2 * t + 2.1),
            0.5 + 0.5 * np.cos(6.2 * t + 4.2),
        ],
        axis=-1,
    )
    rgb[alive] = (0.05, 0.03, 0.1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def _ridge(width: int, rng: np.random.Generator, base: float, roughness: float) -> np.ndarray:
    """A 1-D midpoint-displacement mountain ridge (heights in pixels)."""
    n = 1 << math.ceil(math.log2(width))
    heights = np.zeros(n + 1)
    heights[0], heights[-1] = base + rng.normal(0, 10), base + rng.normal(0, 10)
    step, amplitude = n, roughness
    while step > 1:
        half = step // 2
        for i in range(half, n, step):
            heights[i] = (heights[i - half] + heights[i + half]) / 2 + rng.normal(0, amplitude)
        step, amplitude = half, amplitude * 0.55
    return heights[:width]


def landscape(width: int = 288, height: int = 192, seed: int = 3) -> Image.Image:
    """Sky gradient, sun, three mountain ridges, a lake with ripples and pine trees."""
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 1, height)[:, None, None]
    sky = (1 - yy) * np.array([70, 120, 200]) + yy * np.array([250, 200, 160])
    canvas = np.broadcast_to(sky, (height, width, 3)).copy()
    image = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((200, 30, 236, 66), fill=(255, 240, 200))
    for base, rough, colour in ((95, 28, (120, 130, 160)), (115, 22, (80, 95, 120)), (135, 14, (45, 70, 60))):
        ridge = _ridge(width, rng, base, rough)
        draw.polygon(
            [(0, height)] + [(x, float(ridge[x])) for x in range(width)] + [(width - 1, height)], fill=colour
        )
    # Lake: reflected sky with horizontal ripples.
    lake_top = 150
    for y in range(lake_top, height):
        shade = 0.55 + 0.1 * math.sin(y * 1.7) + 0.05 * rng.normal()
        colour = tuple(int(v * shade) for v in (120, 160, 210))
        draw.line((0, y, width, y), fill=colour)
    # Pine trees along the shore.
    for x in rng.integers(0, width, 14):
        h = int(rng.integers(16, 34))
        draw.polygon([(x, lake_top - h), (x - h // 4, lake_top), (x + h // 4, lake_top)], fill=(20, 50, 30))
        draw.line((x, lake_top, x, lake_top + 3), fill=(60, 40, 20), width=2)
    return image


def tiles(width: int = 240, height: int = 180) -> Image.Image:
    """Periodic texture: a brick wall with mortar lines and a stripe pattern on a gradient."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    rng = np.random.default_rng(7)
    brick_w, brick_h = 30, 14
    for row in range(height // brick_h + 1):
        offset = (brick_w // 2) * (row % 2)
        for col in range(-1, width // brick_w + 1):
            x0, y0 = col * brick_w + offset, row * brick_h
            red = int(150 + rng.integers(-25, 25))
            draw.rectangle((x0 + 1, y0 + 1, x0 + brick_w - 2, y0 + brick_h - 2), fill=(red, 70, 50))
    draw.rectangle((20, 60, 220, 120), fill=(230, 230, 225), outline=(30, 30, 30), width=2)
    draw.text((34, 72), "TILE 42", fill=(20, 20, 20), font=_font(32))
    return image


def pan_clip(path: Path = CLIP, source: Path = CLIP_SOURCE) -> Path:
    """The video tab's example: CLIP_FRAMES crops of CLIP_SIZE from `source`, the window moving in a straight
    line from CLIP_START to CLIP_END (whole pixels), encoded as H.264 yuv420p at CLIP_RATE fps."""
    import av  # PyAV, the `video` extra

    photo = np.asarray(Image.open(source).convert("RGB"))
    width, height = CLIP_SIZE
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=CLIP_RATE)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "20", "threads": "1"}
        for i in range(CLIP_FRAMES):
            t = i / (CLIP_FRAMES - 1)
            left = round(CLIP_START[0] + t * (CLIP_END[0] - CLIP_START[0]))
            top = round(CLIP_START[1] + t * (CLIP_END[1] - CLIP_START[1]))
            crop = np.ascontiguousarray(photo[top : top + height, left : left + width])
            frame = av.VideoFrame.from_ndarray(crop, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, CLIP_RATE)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    return path


def render_assets() -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    outputs = {
        ASSETS / "chart.png": test_chart(),
        ASSETS / "julia.png": julia(192, 144, complex(-0.7269, 0.1889)),
        ASSETS / "bricks.png": tiles(),
    }
    for path, image in outputs.items():
        image.save(path, optimize=True)
        print(f"{path}: {image.size[0]}x{image.size[1]}, {path.stat().st_size / 1024:.1f} kB")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", choices=("all", "assets", "clip"), default="all")
    args = parser.parse_args(argv)
    if args.what in ("all", "assets"):
        render_assets()
    if args.what in ("all", "clip"):
        path = pan_clip()
        print(
            f"{path}: {CLIP_FRAMES} frames of {CLIP_SIZE[0]}x{CLIP_SIZE[1]}, {path.stat().st_size / 1024:.1f} kB"
        )


if __name__ == "__main__":
    main()
