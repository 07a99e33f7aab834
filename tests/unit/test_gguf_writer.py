"""The streaming GGUF writer: the same bytes as gguf-py's own GGUFWriter, and its state checks."""

import gguf
import numpy as np
import pytest

from stages.ggufio.writer import StreamingGGUFWriter, packed_strings

TENSORS = {
    "odd.weight": np.arange(15, dtype=np.float32).reshape(3, 5),  # 60 bytes: padded to the alignment
    "half.weight": (np.arange(64, dtype=np.float32) / 7).astype(np.float16).reshape(8, 8),
    "raw.weight": np.arange(34 * 2, dtype=np.uint8).reshape(2, 34),  # one Q8_0 block per row, as bytes
}
RAW = {"raw.weight": gguf.GGMLQuantizationType.Q8_0}


def metadata(writer, packed: bool) -> None:
    tokens = ["<|im_start|>", "a", "Ġb", "é", "\n"] * 40
    writer.add_name("tiny")
    writer.add_uint32("t.u32", 7)
    writer.add_int64("t.i64", -(2**40))
    writer.add_float32("t.f32", 0.1)
    writer.add_float64("t.f64", 0.1)
    writer.add_bool("t.bool", True)
    writer.add_token_list(packed_strings(tokens) if packed else tokens)
    writer.add_token_types([int(gguf.TokenType.NORMAL)] * 199 + [int(gguf.TokenType.CONTROL)])
    writer.add_token_merges([b"a b", "\u0120 b"])
    writer.add_array("t.floats", [0.5, 1e-7, 3.0])
    writer.add_array("t.bools", [True, False])
    writer.add_array("t.enums", list(gguf.TokenType)[:3])  # int subclasses: GGUFWriter's item-by-item rule
    writer.add_key_value("t.u16s", [1, 2, 65535], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT16)
    writer.add_array("t.nested", [[1, 2], [3]])


def reference(path) -> bytes:
    writer = gguf.GGUFWriter(path, "qwen2")
    metadata(writer, packed=False)
    for name, data in TENSORS.items():
        writer.add_tensor(name, data, raw_dtype=RAW.get(name))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def planned(path) -> StreamingGGUFWriter:
    writer = StreamingGGUFWriter(path, "qwen2")
    metadata(writer, packed=True)
    for name, data in TENSORS.items():
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, raw_dtype=RAW.get(name))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    return writer


def test_streamed_file_equals_gguf_writers_own_byte_for_byte(tmp_path):
    writer = planned(tmp_path / "ours.gguf")
    for name, data in TENSORS.items():
        writer.begin_tensor(name)
        for row in data:  # row by row, as the converter streams
            writer.write_rows(row)
        writer.end_tensor()
    writer.finish()
    assert (tmp_path / "ours.gguf").read_bytes() == reference(tmp_path / "ref.gguf")
    reader = gguf.GGUFReader(tmp_path / "ours.gguf")
    assert [t.name for t in reader.tensors] == list(TENSORS)
    assert np.array_equal(reader.get_tensor(0).data, TENSORS["odd.weight"])


def test_tensor_data_out_of_order_or_of_the_wrong_size_is_refused(tmp_path):
    early = StreamingGGUFWriter(tmp_path / "early.gguf", "qwen2")
    early.add_tensor_info("odd.weight", (3, 5), np.float32, 60)
    early.write_header_to_file()
    with pytest.raises(ValueError, match="Expected output file to contain tensor info"):
        early.begin_tensor("odd.weight")  # before the tensor infos are written
    early.close()

    writer = planned(tmp_path / "bad.gguf")
    with pytest.raises(ValueError, match="out of order: got 'half.weight', the tensor infos say 'odd.weight'"):
        writer.begin_tensor("half.weight")
    with pytest.raises(ValueError, match="outside begin_tensor"):
        writer.write_rows(TENSORS["odd.weight"])
    writer.begin_tensor("odd.weight")
    with pytest.raises(ValueError, match="unfinished"):
        writer.begin_tensor("half.weight")
    with pytest.raises(ValueError, match="odd.weight: 64 bytes, its tensor info says 60"):
        writer.write_rows(np.zeros(16, np.float32))
    writer.write_rows(TENSORS["odd.weight"][:2])
    with pytest.raises(ValueError, match="odd.weight: 40 bytes, its tensor info says 60"):
        writer.end_tensor()  # short: every later tensor would be shifted
    writer.write_rows(TENSORS["odd.weight"][2:])
    writer.end_tensor()
    with pytest.raises(ValueError, match="GGUF file incomplete: half.weight not written"):
        writer.finish()
    writer.close()
