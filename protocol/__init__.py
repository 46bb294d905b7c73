"""The contract both sides speak: messages, codecs, manifest, topics, signing, errors.

Pure: no I/O, and nothing heavier than numpy, msgpack and cryptography.
"""

__all__: list[str] = []
