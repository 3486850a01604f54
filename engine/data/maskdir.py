"""images/ + masks/ folders: one mask image per photo, named like it (or NAME_mask.png), non-zero = object."""

from __future__ import annotations

from pathlib import Path

from engine.data.labels import Item, MaskFileLabel, fail_or_warn, image_files
from engine.errors import ImageError, LabelError
from engine.images import image_size


def mask_folder_items(folder: Path, skip_bad: bool) -> tuple[list[Item], list[MaskFileLabel]]:
    images_dir, masks_dir = folder / "images", folder / "masks"
    masks = {}
    for mask_path in sorted(image_files(masks_dir, folder), key=lambda p: p.suffix.lower() != ".png"):
        masks.setdefault(mask_path.stem, mask_path)  # a .png wins when several files share the stem
    items, labels = [], []
    for image_path in image_files(images_dir, folder):
        stem = image_path.stem
        mask_path = masks.get(stem) or masks.get(f"{stem}_mask")
        try:
            if mask_path is None:
                raise LabelError(image_path, f"no mask in {masks_dir} named {stem}.png or {stem}_mask.png; add one "
                                             "(all zero for a photo without objects).")
            image_wh, mask_wh = image_size(image_path), image_size(mask_path)
            if image_wh != mask_wh:
                raise LabelError(mask_path, f"mask is {mask_wh[0]}x{mask_wh[1]} but its image {image_path} is "
                                            f"{image_wh[0]}x{image_wh[1]}; resize the mask to the image "
                                            "(nearest neighbour) or export both again.")
        except (LabelError, ImageError) as error:
            fail_or_warn(error, skip_bad)
            continue
        items.append(Item(image_path, mask_path, stem))
        labels.append(MaskFileLabel(mask_path))
    return items, labels
