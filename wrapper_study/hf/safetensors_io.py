"""The safetensors file format, read and written with numpy alone (no torch, no extra package).

A file is: 8 bytes (little-endian u64) giving the header's length N, N bytes of JSON mapping
each tensor name to {dtype, shape, data_offsets [begin, end)} (offsets into the bytes after the
header) plus an optional "__metadata__" of strings, then the raw little-endian data. That is
the whole format (https://github.com/huggingface/safetensors), so the loader needs no
dependency beyond numpy; bf16 (which numpy lacks) is widened to fp32 exactly.
"""

from __future__ import annotations

import json
import pathlib
import struct
from typing import Mapping, Optional

import numpy as np

_DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'I64': np.int64,
           'I32': np.int32, 'I16': np.int16, 'I8': np.int8, 'U8': np.uint8, 'BOOL': np.bool_}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


def read_header(path) -> dict:
  """The JSON header only (names, dtypes, shapes), without reading the data."""
  with open(path, 'rb') as f:
    (n,) = struct.unpack('<Q', f.read(8))
    return json.loads(f.read(n))


def load_file(path, names: Optional[set] = None) -> dict[str, np.ndarray]:
  """name -> array for every tensor of the file (or only `names`); bf16 comes back as fp32."""
  path = pathlib.Path(path)
  with open(path, 'rb') as f:
    (n,) = struct.unpack('<Q', f.read(8))
    header = json.loads(f.read(n))
  data = np.memmap(path, dtype=np.uint8, mode='r', offset=8 + n)
  out = {}
  for name, info in header.items():
    if name == '__metadata__' or (names is not None and name not in names):
      continue
    begin, end = info['data_offsets']
    raw = data[begin:end]
    if info['dtype'] == 'BF16':  # The top half of an fp32: widen by shifting, exact.
      array = (raw.view('<u2').astype(np.uint32) << 16).view(np.float32)
    elif info['dtype'] in _DTYPES:
      dtype = np.dtype(_DTYPES[info['dtype']])
      array = np.array(raw.view(dtype.newbyteorder('<')), dtype=dtype)  # One copy, native order.
    else:
      raise ValueError(f'{path}: tensor {name} has dtype {info["dtype"]}, which this reader '
                       f'does not know (known: BF16, {", ".join(_DTYPES)}).')
    out[name] = array.reshape(info['shape'])
  del data  # The copies outlive the map.
  return out


def save_file(tensors: Mapping[str, np.ndarray], path,
              metadata: Optional[Mapping[str, str]] = None) -> None:
  """Writes tensors (numpy dtypes of _DTYPES) as one safetensors file, names sorted."""
  header, offset, blobs = {}, 0, []
  for name in sorted(tensors):
    array = np.ascontiguousarray(tensors[name])
    if array.dtype not in _CODES:
      raise ValueError(f'Tensor {name} has dtype {array.dtype}; safetensors_io writes '
                       f'{sorted(str(d) for d in _CODES)}.')
    blob = array.astype(array.dtype.newbyteorder('<')).tobytes()
    header[name] = {'dtype': _CODES[array.dtype], 'shape': list(array.shape),
                    'data_offsets': [offset, offset + len(blob)]}
    offset += len(blob)
    blobs.append(blob)
  header['__metadata__'] = dict(metadata or {'format': 'pt'})
  text = json.dumps(header, separators=(',', ':')).encode()
  text += b' ' * (-len(text) % 8)  # The reference writer pads the header to 8 bytes.
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(text)))
    f.write(text)
    for blob in blobs:
      f.write(blob)
