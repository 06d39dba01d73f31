"""A folder of class subfolders of images, for the tests of a user's own data."""

from PIL import Image

CLASSES = ("cat", "dog", "owl")


def image_folder(root, per_class=10, size=12, mode="RGB"):
    """A folder of class subfolders: PNGs and JPEGs whose every pixel is the
    class index times 100, so labels can be read back from the pixels."""
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            suffix = "png" if i % 2 else "jpg"
            Image.new(mode, (size, size), (label * 100,) * len(mode)).save(
                root / name / f"{i}.{suffix}"
            )
    return root
