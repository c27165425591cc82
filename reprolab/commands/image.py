"""``reprolab image build NAME``: build (or find in the cache) a guest image.

Warms the cache before a test run (a disk image downloads a Debian rootfs the first time)
and shows what a recipe turns into; ``image list`` names the shipped recipes.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from reprolab.image.recipe import images_dir, load_recipe


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "image", help="build or list guest images", description="Guest image recipes."
    )
    sub = parser.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build an image recipe (cached)")
    build.add_argument("name", help="recipe name (images/NAME.yaml) or path to a recipe")
    build.add_argument("--kernel", default="stock",
                       help="kernel spec whose modules go in (default: %(default)s)")
    build.add_argument("--json", action="store_true", help="print the image as JSON")
    build.set_defaults(func=run_build)
    listing = sub.add_parser("list", help="list the shipped recipes")
    listing.set_defaults(func=run_list)


def run_build(args: argparse.Namespace) -> int:
    from reprolab.image.build import build_image
    from reprolab.kernel.resolve import resolve_kernel

    recipe = load_recipe(args.name)
    kernel = resolve_kernel(args.kernel)
    image = build_image(recipe, kernel)
    if args.json:
        data = {k: (str(v) if v is not None and k in ("initrd", "disk") else v)
                for k, v in asdict(image).items()}
        print(json.dumps(data, indent=2))
        return 0
    state = "cached" if image.cached else f"built in {image.build_seconds:.1f} s"
    print(f"{image.recipe} ({image.kind}, {state}) key {image.key[:16]}")
    for label, path in (("initrd", image.initrd), ("disk", image.disk)):
        if path is not None:
            print(f"  {label}: {path}")
    if image.cmdline:
        print(f"  cmdline: {' '.join(image.cmdline)}")
    if image.host_key:
        print(f"  host key: {image.host_key}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    for path in sorted(images_dir().glob("*.yaml")):
        recipe = load_recipe(path)
        print(f"{recipe.name:16} {recipe.kind:10} {', '.join(recipe.packages)}")
    return 0
