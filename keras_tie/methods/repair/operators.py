"""Names of SR-OOD's erosion operators, and the sets each variant trains on.

An operator is written as a short name (used in configs, run.json and the
`repair` score's `operator` parameter):

    identity            T(x) = x (reconstruction: the paper's SR-OOD_Rec)
    down{F}             bicubic downsampling by the integer factor F, then
                        bicubic upsampling back to the input size
                        (super-resolution: SR-OOD_SR), e.g. `down2`, `down4`
    box{H}x{W}{+-DY}{+-DX}
                        an H x W rectangle set to 0 (black), its centre DY
                        rows and DX columns from the image centre
                        (inpainting: SR-OOD_Inpaint), e.g. `box8x8+0+0`,
                        `box12x12-4+4`

This module has no TensorFlow import, so a config can be validated before
anything heavy loads; `keras_tie.methods.repair.erosion` applies the operators.
"""

import dataclasses
import re

IDENTITY = "identity"
VARIANTS = ("superres", "inpaint", "reconstruction")

_DOWN = re.compile(r"down(\d+)")
_BOX = re.compile(r"box(\d+)x(\d+)([+-]\d+)([+-]\d+)")
_GRAMMAR = "identity, down{F} (e.g. down2) or box{H}x{W}{+-DY}{+-DX} (e.g. box8x8+0+0)"


@dataclasses.dataclass(frozen=True)
class OperatorSpec:
    """One parsed operator.

    Attributes:
        name: its name.
        factor: downsampling factor (1: none).
        box: (height, width, dy, dx) of the blacked-out rectangle, or None.
    """

    name: str
    factor: int = 1
    box: tuple | None = None

    def box_rows_columns(self, image_shape):
        """(top, left, height, width) of the rectangle in an `image_shape` image.

        The centre is (H // 2 + dy, W // 2 + dx); the rectangle spans rows
        [centre - height // 2, centre - height // 2 + height).

        Raises:
            ValueError: the rectangle does not fit inside the image.
        """
        height, width, dy, dx = self.box
        rows, columns = int(image_shape[0]), int(image_shape[1])
        top = rows // 2 + dy - height // 2
        left = columns // 2 + dx - width // 2
        if top < 0 or left < 0 or top + height > rows or left + width > columns:
            raise ValueError(
                f"Operator {self.name!r} blacks out rows {top}..{top + height - 1} and columns "
                f"{left}..{left + width - 1}, outside a {rows}x{columns} image. Use a smaller box "
                "or offset.")
        return top, left, height, width


def parse_operator(name):
    """The `OperatorSpec` of an operator name.

    Raises:
        ValueError: a name outside the grammar, a factor below 2 or an empty box.
    """
    if not isinstance(name, str):
        raise ValueError(f"An operator name is a string ({_GRAMMAR}). Received: name={name!r}")
    if name == IDENTITY:
        return OperatorSpec(name)
    down = _DOWN.fullmatch(name)
    if down:
        factor = int(down.group(1))
        if factor < 2:
            raise ValueError(f"A downsampling factor is an integer >= 2 (1 is `identity`). "
                             f"Received: name={name!r}")
        return OperatorSpec(name, factor=factor)
    box = _BOX.fullmatch(name)
    if box:
        height, width, dy, dx = (int(g) for g in box.groups())
        if height < 1 or width < 1:
            raise ValueError(f"A box is at least 1x1. Received: name={name!r}")
        return OperatorSpec(name, box=(height, width, dy, dx))
    raise ValueError(f"Unknown erosion operator. Received: name={name!r}. Expected {_GRAMMAR}.")


def superres_operators(factors):
    """`down{F}` for each factor: the super-resolution set."""
    return [f"down{int(f)}" for f in factors]


def inpaint_operators(sizes, offsets):
    """Square boxes of each size at each centre offset: the inpainting set.

    An offset o > 0 gives the four diagonal positions (+-o, +-o) (the paper's
    Table V measures the distance between the mask centre and the image
    centre, in pixels, without a direction); o = 0 the centre.
    """
    names = []
    for size in sizes:
        for offset in offsets:
            positions = [(0, 0)] if offset == 0 else [
                (sy * offset, sx * offset) for sy in (-1, 1) for sx in (-1, 1)]
            for dy, dx in positions:
                names.append(f"box{size}x{size}{dy:+d}{dx:+d}")
    return list(dict.fromkeys(names))


def variant_operators(variant, factors=(2, 4), box_sizes=(8, 12), box_offsets=(0, 4)):
    """The operator set T of an SR-OOD variant (paper, section IV-D).

    Args:
        variant: `superres` (downsampling by each of `factors`), `inpaint`
            (boxes of `box_sizes` at `box_offsets`) or `reconstruction`
            (the identity alone).
    """
    if variant == "superres":
        return superres_operators(factors)
    if variant == "inpaint":
        return inpaint_operators(box_sizes, box_offsets)
    if variant == "reconstruction":
        return [IDENTITY]
    raise ValueError(f"Unknown SR-OOD variant. Received: variant={variant!r}. "
                     f"Expected one of {VARIANTS}.")
