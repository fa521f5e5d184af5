"""The error every image reader raises for input it cannot use; its message is bilingual (zh / en) for users."""


class ImageError(ValueError):
    """The input is not an image we can use; the message says why in Chinese and English."""
