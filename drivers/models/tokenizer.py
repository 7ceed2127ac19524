"""A byte-level tokenizer: token ids 0-255 are the bytes of the UTF-8 text, then a few specials.

Byte-level means no vocabulary file and no unknown tokens: every string encodes,
and a small model learns its own spelling. Text is encoded as UTF-8 with
`surrogatepass`, so even a string holding a lone surrogate (which strict UTF-8
refuses) encodes; decoding restores such surrogates and turns any other invalid
byte sequence (which a model may well generate) into U+FFFD instead of raising.
So `decode(encode(s)) == s` for every Python str.
"""

import codecs

PAD = 256
"""Padding id: fills batches to one length; never produced as text."""
BOS = 257
"""Beginning of sequence: optionally starts a prompt."""
EOS = 258
"""End of sequence: the model emits it to say the text is finished."""
SPECIALS = {"<pad>": PAD, "<bos>": BOS, "<eos>": EOS}
"""Special token names and ids."""
VOCAB_SIZE = 259
"""256 byte ids plus the specials."""

_ERRORS = "llmos-bytes"


def _decode_error(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: restore a UTF-8-encoded surrogate, else replace one bad byte with U+FFFD."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    raw = exc.object[exc.start : exc.start + 3]
    if len(raw) == 3 and raw[0] == 0xED and 0xA0 <= raw[1] <= 0xBF and 0x80 <= raw[2] <= 0xBF:
        return raw.decode("utf-8", "surrogatepass"), exc.start + 3
    return "\ufffd", exc.start + 1


codecs.register_error(_ERRORS, _decode_error)


class ByteStream:
    """The text of a stream of byte ids: a character comes out once all its bytes are in."""

    def __init__(self, tokenizer: "ByteTokenizer"):
        self.tokenizer = tokenizer
        self.decoder = tokenizer.incremental_decoder()

    def step(self, token: int) -> str:
        """Add one id; return the characters it completes."""
        return self.decoder.decode(self.tokenizer.decode_bytes([token]))

    def finish(self) -> str:
        """The bytes held back, decoded (an incomplete character becomes U+FFFD)."""
        return self.decoder.decode(b"", final=True)


class ByteTokenizer:
    """Text to byte ids and back, with PAD/BOS/EOS specials above the 256 byte ids.

    It is tinygpt's tokenizer as the kernel uses it (`llmos.syscalls.plugin.Tokenizer`):
    a prompt gets nothing added, EOS ends a generation, there is no chat template.
    """

    name = "bytes"
    vocab_size = VOCAB_SIZE
    pad_id = PAD
    bos_id = BOS
    eos_id = EOS
    eos_ids = frozenset({EOS})
    chat_template = ""
    bos_token = "<bos>"
    eos_token = "<eos>"

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        """The token ids of `text` (its UTF-8 bytes), with BOS first and/or EOS last if asked."""
        ids = list(text.encode("utf-8", "surrogatepass"))
        return ([BOS] if bos else []) + ids + ([EOS] if eos else [])

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt's ids: its bytes, nothing added."""
        return self.encode(text)

    def stream(self, prompt=()) -> ByteStream:
        """A text stream for generated ids (a byte tokenizer needs no context from the prompt)."""
        return ByteStream(self)

    def decode_bytes(self, ids) -> bytes:
        """The raw bytes of the byte ids in `ids`; special ids are dropped."""
        return bytes(i for i in (int(t) for t in ids) if 0 <= i < 256)

    def decode(self, ids) -> str:
        """The text of `ids` (specials dropped); invalid UTF-8 becomes U+FFFD, never an error."""
        return self.decode_bytes(ids).decode("utf-8", _ERRORS)

    def incremental_decoder(self) -> codecs.IncrementalDecoder:
        """A decoder for a token stream: it holds back the bytes of a character not yet complete."""
        return codecs.getincrementaldecoder("utf-8")(_ERRORS)
