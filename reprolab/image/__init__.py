"""Guest images: recipes (``images/*.yaml``), their builders and the cache behind them.

A recipe says what a guest must contain; :func:`reprolab.image.build.build_image` turns it
plus a kernel into a :class:`reprolab.image.build.GuestImage` (an initramfs, or a disk image
with a small loader initramfs), cached by content hash so parallel workers build it once.
"""
