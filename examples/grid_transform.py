"""Blur an image-like grid in parallel: split it into row tiles, blur each, reassemble.

    python examples/grid_transform.py             # a 600 x 600 grid, tiles of 50 rows
    python examples/grid_transform.py 1200        # 1200 x 1200

The grid is a list of rows of floats (8-bit pixel values, no numpy needed), generated
deterministically. The blur is the 3x3 Gaussian kernel [1 2 1; 2 4 2; 1 2 1] / 16 with
edges clamped. A pixel's new value depends on the rows above and below it, so each tile
task gets its own rows plus its neighbour rows (the "halo"): the row just above the
tile and the row just below it, or None at the grid's top and bottom edges.

Every pixel is a whole number and the kernel's weights are powers of two, so the blurred
values are exact: the result does not depend on how the grid is tiled. Prints the size,
the sum of all blurred pixels and a SHA-256 of the blurred grid as JSON on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from typing import TypedDict

from procflow import entrypoint, task

DEFAULT_SIZE = 600
TILE_ROWS = 50
SEED = 7

Grid = list[list[float]]


class Params(TypedDict):
    rows: int
    cols: int
    tile_rows: int
    seed: int


class Summary(TypedDict):
    rows: int
    cols: int
    tiles: int
    sum: float
    sha256: str


def make_grid(rows: int, cols: int, seed: int = SEED) -> Grid:
    """A smooth pattern plus noise, as whole-number pixel values in 0..255."""
    rng = random.Random(seed)
    grid = []
    for i in range(rows):
        row = []
        for j in range(cols):
            value = 128 + 90 * math.sin(i / 17.0) * math.cos(j / 23.0) + rng.randint(-30, 30)
            row.append(float(min(255, max(0, int(value)))))
        grid.append(row)
    return grid


def grid_digest(grid: Grid) -> str:
    return hashlib.sha256(json.dumps(grid).encode()).hexdigest()


@task
def blur_tile(rows: Grid, above: list[float] | None, below: list[float] | None) -> Grid:
    """Blur ``rows``; ``above``/``below`` are the neighbour rows (None at the grid's edge,
    where the edge row is repeated). The kernel is separable: a vertical pass, then a
    horizontal one."""
    first = above if above is not None else rows[0]
    last = below if below is not None else rows[-1]
    padded = [first, *rows, last]
    out = []
    for k in range(1, len(padded) - 1):
        up, mid, down = padded[k - 1], padded[k], padded[k + 1]
        v = [a + 2.0 * b + c for a, b, c in zip(up, mid, down, strict=True)]
        end = len(v) - 1
        out.append(
            [(v[max(j - 1, 0)] + 2.0 * v[j] + v[min(j + 1, end)]) / 16.0 for j in range(end + 1)]
        )
    return out


@entrypoint
def main(params: Params | None = None) -> Summary:
    """Blur a generated grid tile by tile (None: a 600 x 600 grid, 50-row tiles)."""
    p = params or Params(rows=DEFAULT_SIZE, cols=DEFAULT_SIZE, tile_rows=TILE_ROWS, seed=SEED)
    grid = make_grid(p["rows"], p["cols"], p["seed"])
    n = len(grid)
    tiles = []
    for start in range(0, n, p["tile_rows"]):
        stop = min(start + p["tile_rows"], n)
        above = grid[start - 1] if start > 0 else None
        below = grid[stop] if stop < n else None
        tiles.append(blur_tile(grid[start:stop], above, below))
    blurred = [row for tile in tiles for row in tile.result()]
    return Summary(
        rows=len(blurred),
        cols=len(blurred[0]) if blurred else 0,
        tiles=len(tiles),
        sum=sum(sum(row) for row in blurred),
        sha256=grid_digest(blurred),
    )


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", nargs="?", type=int, default=DEFAULT_SIZE, help="rows = columns")
    parser.add_argument("--tile-rows", type=int, default=TILE_ROWS)
    args = parser.parse_args(argv)
    if args.size < 1 or args.tile_rows < 1:
        parser.error("size and --tile-rows must be positive")
    started = time.perf_counter()
    summary = main.invoke(
        Params(rows=args.size, cols=args.size, tile_rows=args.tile_rows, seed=SEED)
    )
    print(json.dumps(summary))
    print(
        f"grid_transform: {summary['rows']}x{summary['cols']} grid in {summary['tiles']} "
        f"tiles blurred in {time.perf_counter() - started:.2f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli())
