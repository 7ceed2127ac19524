"""The byte-level tokenizer: ids, specials and the round trip of any str."""

from hypothesis import given
from hypothesis import strategies as st
from llmos.drivers.models.tokenizer import BOS, EOS, PAD, VOCAB_SIZE, ByteTokenizer

tok = ByteTokenizer()


@given(st.text())
def test_round_trip_of_any_text(text):
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == BOS and ids[-1] == EOS
    assert all(0 <= i < VOCAB_SIZE for i in ids)
    assert tok.decode(ids) == text


def test_lone_surrogates_round_trip():
    for text in ["\ud800", "a\udfffb", "\ud83d\ude00x"]:
        assert tok.decode(tok.encode(text)) == text


def test_ids_are_utf8_bytes_and_specials_are_dropped():
    assert tok.encode("é") == [0xC3, 0xA9]
    assert tok.decode([PAD, 104, BOS, 105, EOS]) == "hi"


def test_invalid_bytes_decode_to_replacement_not_error():
    assert tok.decode([0xFF, 65, 0xE2, 0x9C]) == "\ufffdA\ufffd\ufffd"


def test_a_folder_tokenizer_is_read_once_while_its_files_are_unchanged(tmp_path):
    import os

    import hf_folders  # tests/support

    from llmos.drivers.models.hf_tokenizer import folder_tokenizer

    hf_folders.save_tokenizer(hf_folders.train_tokenizer(), str(tmp_path))
    first = folder_tokenizer(str(tmp_path))
    assert folder_tokenizer(str(tmp_path)) is first  # the kernel asks on every model_load
    config = tmp_path / "tokenizer_config.json"
    os.utime(config, ns=(config.stat().st_mtime_ns + 10**9,) * 2)
    assert folder_tokenizer(str(tmp_path)) is not first  # a changed file is read again
    assert folder_tokenizer(str(tmp_path / "none")) is None
