"""Teachers shared by the teacher and hybrid tests (frozen, so sharing is safe)."""
import functools

from sj_distill.teachers import create_teacher

SMALL = dict(channels=(8, 16, 32, 64), stem_width=8)


@functools.lru_cache(maxsize=None)
def teacher(name: str, small: bool = False, in_chans: int = 3):
    """A CIFAR-stem timm teacher with 10 classes; ``small`` uses widths 8/16/32/64."""
    return create_teacher(name, num_classes=10, in_chans=in_chans, **(SMALL if small else {}))
