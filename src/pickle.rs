//! A restricted Python pickle reader: it runs the pickle machine for protocols 0–5 over plain
//! data (None, bools, ints, floats, str, bytes, lists, tuples, dicts) and recognises a short
//! list of constructors as data, never as code:
//! - NumPy arrays, the two ways NumPy pickles them (`numpy.core.multiarray._reconstruct` + BUILD
//!   state, and protocol 5's `numpy._core.numeric._frombuffer`): DragBench's `meta_data.pkl`
//!   (docs/EVALUATION.md §1.3);
//! - PyTorch tensors as `torch.save` writes them (`torch._utils._rebuild_tensor_v2` over a
//!   persistent storage id, `_rebuild_parameter`, `collections.OrderedDict`): the `.pth` files
//!   [`crate::weights::pth`] reads (LPIPS heads, torchvision's AlexNet).
//!
//! Any other global is refused with its name: unpickling never runs code.
//! Reference: CPython `Lib/pickle.py`, NumPy `ndarray.__reduce_ex__`, PyTorch
//! `torch/serialization.py` (`persistent_id`) and `torch/_utils.py`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::error::{Error, Result};

/// A NumPy array: dtype string (`u1`, `f4`, `<f8`, …), shape and raw C-order bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// NumPy dtype code with byte order when given (`|u1`, `<f4`).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Fortran order.
    pub fortran: bool,
    /// Raw element bytes.
    pub data: Vec<u8>,
}

impl NdArray {
    /// Elements as f64 (bool, u1/i1, u2/i2, u4/i4, u8/i8, f2? no, f4, f8), C order.
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        let code = self.dtype.trim_start_matches(['<', '>', '|', '=']);
        let big = self.dtype.starts_with('>');
        let n: usize = self.shape.iter().product();
        let bad = |why: &str| {
            Error::InvalidInput(format!("NumPy array of dtype `{}`: {why}", self.dtype))
        };
        let size = match code {
            "b1" | "?" | "u1" | "i1" => 1,
            "u2" | "i2" => 2,
            "u4" | "i4" | "f4" => 4,
            "u8" | "i8" | "f8" => 8,
            _ => return Err(bad("unsupported element type")),
        };
        if self.data.len() != n * size {
            return Err(bad(&format!("{} bytes for {n} elements", self.data.len())));
        }
        let mut out = Vec::with_capacity(n);
        for chunk in self.data.chunks_exact(size) {
            let mut b = [0u8; 8];
            if big {
                b[..size].copy_from_slice(chunk);
                b[..size].reverse();
            } else {
                b[..size].copy_from_slice(chunk);
            }
            out.push(match code {
                "b1" | "?" | "u1" => b[0] as f64,
                "i1" => b[0] as i8 as f64,
                "u2" => u16::from_le_bytes([b[0], b[1]]) as f64,
                "i2" => i16::from_le_bytes([b[0], b[1]]) as f64,
                "u4" => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
                "i4" => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
                "f4" => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
                "u8" => u64::from_le_bytes(b) as f64,
                "i8" => i64::from_le_bytes(b) as f64,
                _ => f64::from_le_bytes(b),
            });
        }
        if self.fortran && self.shape.len() == 2 {
            let (r, c) = (self.shape[0], self.shape[1]);
            let mut t = vec![0.0; n];
            for i in 0..r {
                for j in 0..c {
                    t[i * c + j] = out[j * r + i];
                }
            }
            out = t;
        }
        Ok(out)
    }
}

/// A Python value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `bool`.
    Bool(bool),
    /// `int` (within i64).
    Int(i64),
    /// A wider `int`: its little-endian two's-complement bytes, as LONG1 stores them (the
    /// legacy PyTorch format's 80-bit magic number).
    BigInt(Vec<u8>),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes` / `bytearray`.
    Bytes(Vec<u8>),
    /// `list`.
    List(Vec<Value>),
    /// `tuple`.
    Tuple(Vec<Value>),
    /// `dict` with keys in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A NumPy array.
    Array(NdArray),
    /// A PyTorch storage, as named by its persistent id (the data lives outside the pickle).
    Storage(StorageRef),
    /// A PyTorch tensor: a strided view into a storage.
    Tensor(TorchTensor),
}

/// A PyTorch storage named by a persistent id `('storage', torch.<Type>Storage, key, location,
/// numel, …)`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// The storage class without its module: `FloatStorage`, `HalfStorage`, `BFloat16Storage`, ….
    pub kind: String,
    /// The key the storage's bytes are filed under (`archive/data/<key>` in a zip checkpoint).
    pub key: String,
    /// Elements in the storage.
    pub numel: u64,
}

/// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)`: the tensor's elements
/// are `storage[offset + Σ index_d · stride_d]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchTensor {
    /// The storage viewed.
    pub storage: StorageRef,
    /// First element, in elements.
    pub offset: u64,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

impl Value {
    /// `dict[key]` for a string key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A number as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Array(a) if a.shape.iter().product::<usize>() == 1 => {
                a.to_f64().ok()?.first().copied()
            }
            _ => None,
        }
    }

    /// Items of a list or tuple.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }
}

/// Objects under construction on the pickle stack.
#[derive(Debug, Clone)]
enum Obj {
    Value(Value),
    Mark,
    Global(String, String),
    /// `numpy.dtype(code, …)` awaiting its BUILD state.
    Dtype(String),
    /// `_reconstruct(ndarray, …)` awaiting its BUILD state.
    PendingArray,
    /// A list/dict shared through the memo (appends must be visible to every reference).
    Shared(Rc<RefCell<Value>>),
}

fn err(problem: impl Into<String>) -> Error {
    Error::InvalidInput(format!("pickle data cannot be read: {}", problem.into()))
}

fn value(o: Obj) -> Result<Value> {
    match o {
        Obj::Value(v) => Ok(v),
        Obj::Shared(rc) => Ok(rc.borrow().clone()),
        Obj::Dtype(code) => Ok(Value::Str(code)),
        // A class passed as an argument (e.g. `ndarray` to `_reconstruct`): its dotted name.
        Obj::Global(module, name) => Ok(Value::Str(format!("{module}.{name}"))),
        other => Err(err(format!("unexpected object {other:?} in data"))),
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| err("truncated file"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn le(&mut self, n: usize) -> Result<u64> {
        let s = self.take(n)?;
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(s);
        Ok(u64::from_le_bytes(b))
    }
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.b[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| err("unterminated text field"))?;
        self.pos += n + 1;
        std::str::from_utf8(&rest[..n]).map_err(|_| err("non-UTF-8 text field"))
    }
    fn len_string(&mut self, n: usize) -> Result<String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| err("invalid UTF-8 string"))
    }
}

/// Parses a pickle (protocol 0–5) into a [`Value`]; bytes after its STOP are ignored.
pub fn parse_pickle(bytes: &[u8]) -> Result<Value> {
    parse_pickle_prefix(bytes).map(|(v, _)| v)
}

/// Parses the pickle at the start of `bytes`: its value and how many bytes it took (files such
/// as legacy PyTorch checkpoints hold several pickles in a row).
pub fn parse_pickle_prefix(bytes: &[u8]) -> Result<(Value, usize)> {
    let mut r = Reader { b: bytes, pos: 0 };
    let mut stack: Vec<Obj> = Vec::new();
    let mut memo: HashMap<u64, Obj> = HashMap::new();
    let pop = |stack: &mut Vec<Obj>| stack.pop().ok_or_else(|| err("stack underflow"));
    let pop_mark = |stack: &mut Vec<Obj>| -> Result<Vec<Obj>> {
        let at = stack
            .iter()
            .rposition(|o| matches!(o, Obj::Mark))
            .ok_or_else(|| err("missing MARK"))?;
        let items = stack.split_off(at + 1);
        stack.pop();
        Ok(items)
    };
    // Mutable containers live behind Rc so memo references see later appends.
    let shared = |v: Value| Obj::Shared(Rc::new(RefCell::new(v)));
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return Err(err(format!("pickle protocol {proto} is newer than 5")));
                }
            }
            0x95 => {
                r.take(8)?;
            }
            b'.' => {
                let top = pop(&mut stack)?;
                return Ok((value(top)?, r.pos));
            }
            b'(' => stack.push(Obj::Mark),
            b'0' => {
                pop(&mut stack)?;
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => {
                let top = stack
                    .last()
                    .cloned()
                    .ok_or_else(|| err("stack underflow"))?;
                stack.push(top);
            }
            b'N' => stack.push(Obj::Value(Value::None)),
            0x88 => stack.push(Obj::Value(Value::Bool(true))),
            0x89 => stack.push(Obj::Value(Value::Bool(false))),
            b'J' => stack.push(Obj::Value(Value::Int(r.le(4)? as u32 as i32 as i64))),
            b'K' => stack.push(Obj::Value(Value::Int(r.u8()? as i64))),
            b'M' => stack.push(Obj::Value(Value::Int(r.le(2)? as i64))),
            0x8a => {
                let n = r.u8()? as usize;
                let raw = r.take(n)?;
                if n > 8 {
                    stack.push(Obj::Value(Value::BigInt(raw.to_vec())));
                    continue;
                }
                let mut b = [0u8; 8];
                b[..n].copy_from_slice(raw);
                if n > 0 && n < 8 && raw[n - 1] & 0x80 != 0 {
                    b[n..].fill(0xff);
                }
                stack.push(Obj::Value(Value::Int(i64::from_le_bytes(b))));
            }
            b'I' | b'L' => {
                let line = r.line()?.trim_end_matches('L');
                let v = match line {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    s => Value::Int(s.parse().map_err(|_| err("bad integer"))?),
                };
                stack.push(Obj::Value(v));
            }
            b'G' => {
                let raw = r.take(8)?;
                stack.push(Obj::Value(Value::Float(f64::from_be_bytes(
                    raw.try_into().expect("8 bytes"),
                ))));
            }
            b'F' => {
                let v = r.line()?.parse().map_err(|_| err("bad float"))?;
                stack.push(Obj::Value(Value::Float(v)));
            }
            b'X' => {
                let n = r.le(4)? as usize;
                stack.push(Obj::Value(Value::Str(r.len_string(n)?)));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Obj::Value(Value::Str(r.len_string(n)?)));
            }
            0x8d => {
                let n = r.le(8)? as usize;
                stack.push(Obj::Value(Value::Str(r.len_string(n)?)));
            }
            b'S' => {
                // Protocol 0 STRING: a quoted Python literal (escapes kept as written).
                let line = r.line()?;
                let unquoted = line
                    .strip_prefix('\'')
                    .and_then(|l| l.strip_suffix('\''))
                    .or_else(|| line.strip_prefix('"').and_then(|l| l.strip_suffix('"')))
                    .ok_or_else(|| err("bad STRING literal"))?;
                stack.push(Obj::Value(Value::Str(unquoted.to_string())));
            }
            b'V' => {
                let s = r.line()?.to_string();
                stack.push(Obj::Value(Value::Str(s)));
            }
            // Python 2 str: kept as latin-1 text.
            b'T' | b'U' => {
                let n = if op == b'T' {
                    r.le(4)? as usize
                } else {
                    r.u8()? as usize
                };
                let s: String = r.take(n)?.iter().map(|&c| c as char).collect();
                stack.push(Obj::Value(Value::Str(s)));
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => r.le(4)?,
                    b'C' => r.u8()? as u64,
                    _ => r.le(8)?,
                } as usize;
                stack.push(Obj::Value(Value::Bytes(r.take(n)?.to_vec())));
            }
            0x97 | 0x98 => return Err(err("out-of-band buffers are not supported")),
            b']' => stack.push(shared(Value::List(Vec::new()))),
            b'}' => stack.push(shared(Value::Dict(Vec::new()))),
            b')' => stack.push(Obj::Value(Value::Tuple(Vec::new()))),
            0x8f => stack.push(shared(Value::List(Vec::new()))),
            b'l' => {
                let items = pop_mark(&mut stack)?
                    .into_iter()
                    .map(value)
                    .collect::<Result<_>>()?;
                stack.push(shared(Value::List(items)));
            }
            b't' | 0x91 => {
                let items = pop_mark(&mut stack)?
                    .into_iter()
                    .map(value)
                    .collect::<Result<_>>()?;
                stack.push(Obj::Value(Value::Tuple(items)));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(err("stack underflow"));
                }
                let items = stack
                    .split_off(stack.len() - n)
                    .into_iter()
                    .map(value)
                    .collect::<Result<_>>()?;
                stack.push(Obj::Value(Value::Tuple(items)));
            }
            b'd' => {
                let items = pop_mark(&mut stack)?;
                let mut pairs = Vec::new();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((value(k)?, value(v)?));
                }
                stack.push(shared(Value::Dict(pairs)));
            }
            b'a' | b'e' | 0x90 => {
                let items: Vec<Value> = if op == b'a' {
                    vec![value(pop(&mut stack)?)?]
                } else {
                    pop_mark(&mut stack)?
                        .into_iter()
                        .map(value)
                        .collect::<Result<_>>()?
                };
                match stack.last() {
                    Some(Obj::Shared(rc)) => match &mut *rc.borrow_mut() {
                        Value::List(v) => v.extend(items),
                        _ => return Err(err("APPEND to a non-list")),
                    },
                    _ => return Err(err("APPEND to a non-list")),
                }
            }
            b's' | b'u' => {
                let items: Vec<Obj> = if op == b's' {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack)?
                };
                let mut pairs = Vec::new();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((value(k)?, value(v)?));
                }
                match stack.last() {
                    Some(Obj::Shared(rc)) => match &mut *rc.borrow_mut() {
                        Value::Dict(d) => d.extend(pairs),
                        _ => return Err(err("SETITEM on a non-dict")),
                    },
                    _ => return Err(err("SETITEM on a non-dict")),
                }
            }
            b'q' | b'r' | 0x94 | b'p' => {
                let key = match op {
                    b'q' => r.u8()? as u64,
                    b'r' => r.le(4)?,
                    b'p' => r.line()?.parse().map_err(|_| err("bad memo key"))?,
                    _ => memo.len() as u64,
                };
                let top = stack
                    .last()
                    .cloned()
                    .ok_or_else(|| err("stack underflow"))?;
                memo.insert(key, top);
            }
            b'h' | b'j' | b'g' => {
                let key = match op {
                    b'h' => r.u8()? as u64,
                    b'j' => r.le(4)?,
                    _ => r.line()?.parse().map_err(|_| err("bad memo key"))?,
                };
                let o = memo
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| err(format!("memo key {key} missing")))?;
                stack.push(o);
            }
            b'c' => {
                let module = r.line()?.to_string();
                let name = r.line()?.to_string();
                stack.push(Obj::Global(module, name));
            }
            0x93 => {
                let name = value(pop(&mut stack)?)?;
                let module = value(pop(&mut stack)?)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Obj::Global(m, n)),
                    _ => return Err(err("STACK_GLOBAL needs two strings")),
                }
            }
            b'R' | 0x81 => {
                let args = value(pop(&mut stack)?)?;
                let callable = pop(&mut stack)?;
                stack.push(reduce(callable, args)?);
            }
            b'Q' => {
                let pid = value(pop(&mut stack)?)?;
                stack.push(Obj::Value(Value::Storage(storage_ref(&pid)?)));
            }
            b'b' => {
                let state = value(pop(&mut stack)?)?;
                let obj = pop(&mut stack)?;
                stack.push(build(obj, state)?);
            }
            other => return Err(err(format!("unsupported pickle opcode 0x{other:02x}"))),
        }
    }
}

fn is_numpy(module: &str) -> bool {
    module == "numpy" || module.starts_with("numpy.") || module == "_codecs"
}

/// The storage a persistent id names: `('storage', storage class, key, location, numel, …)`
/// (zip checkpoints and the legacy format alike).
fn storage_ref(pid: &Value) -> Result<StorageRef> {
    let items = pid.items().unwrap_or_default();
    match items {
        [
            Value::Str(tag),
            Value::Str(class),
            Value::Str(key),
            _,
            numel,
            ..,
        ] if tag == "storage" => Ok(StorageRef {
            kind: class.rsplit('.').next().unwrap_or(class).to_string(),
            key: key.clone(),
            numel: numel
                .as_f64()
                .filter(|n| *n >= 0.0)
                .ok_or_else(|| err("storage id without an element count"))?
                as u64,
        }),
        _ => Err(err(format!("unsupported persistent id {pid:?}"))),
    }
}

/// The PyTorch constructors read as data (`torch.save`'s tensors, parameters and state dicts).
fn reduce_torch(module: &str, name: &str, args: &[Value]) -> Option<Result<Obj>> {
    Some(match (module, name) {
        // `OrderedDict()`, or `OrderedDict([(key, value), …])` as protocols 0 and 1 write it.
        ("collections", "OrderedDict") => {
            let pairs = match args.first().and_then(Value::items) {
                Some(items) => items
                    .iter()
                    .map(|kv| match kv.items() {
                        Some([k, v]) => Ok((k.clone(), v.clone())),
                        _ => Err(err("OrderedDict item that is not a pair")),
                    })
                    .collect::<Result<Vec<_>>>(),
                None => Ok(Vec::new()),
            };
            pairs.map(|p| Obj::Shared(Rc::new(RefCell::new(Value::Dict(p)))))
        }
        ("torch._utils", "_rebuild_tensor_v2") => match args {
            [Value::Storage(storage), offset, size, stride, ..] => (|| {
                let offset = offset
                    .as_f64()
                    .filter(|o| *o >= 0.0)
                    .ok_or_else(|| err("tensor without a storage offset"))?
                    as u64;
                Ok(Obj::Value(Value::Tensor(TorchTensor {
                    storage: storage.clone(),
                    offset,
                    shape: shape_of(Some(size))?,
                    stride: shape_of(Some(stride))?,
                })))
            })(),
            _ => Err(err(
                "_rebuild_tensor_v2 without (storage, offset, size, stride)",
            )),
        },
        // (data, requires_grad, backward_hooks[, state]): a Parameter is its data.
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(Obj::Value(t.clone())),
                _ => Err(err("_rebuild_parameter without a tensor")),
            }
        }
        _ => return None,
    })
}

fn reduce(callable: Obj, args: Value) -> Result<Obj> {
    let Obj::Global(module, name) = callable else {
        return Err(err("REDUCE on a non-callable"));
    };
    let items = args.items().map(<[Value]>::to_vec).unwrap_or_default();
    if let Some(obj) = reduce_torch(&module, &name, &items) {
        return obj;
    }
    if !is_numpy(&module) {
        return Err(err(format!(
            "refusing to call {module}.{name}: only plain data, NumPy arrays and PyTorch \
             tensors are read"
        )));
    }
    let args = items;
    match (module.as_str(), name.as_str()) {
        ("_codecs", "encode") => match args.first() {
            // Protocol 2 pickles bytes as _codecs.encode(latin-1 text, "latin1").
            Some(Value::Str(s)) => Ok(Obj::Value(Value::Bytes(
                s.chars().map(|c| c as u32 as u8).collect(),
            ))),
            _ => Err(err("_codecs.encode without text")),
        },
        (_, "dtype") => match args.first() {
            Some(Value::Str(code)) => Ok(Obj::Dtype(code.clone())),
            _ => Err(err("numpy.dtype without a type code")),
        },
        (_, "_reconstruct") => Ok(Obj::PendingArray),
        (_, "_frombuffer") => {
            // (buffer, dtype, shape, order)
            let data = match args.first() {
                Some(Value::Bytes(b)) => b.clone(),
                _ => return Err(err("_frombuffer without a buffer")),
            };
            let dtype = match args.get(1) {
                Some(Value::Str(s)) => s.clone(),
                _ => return Err(err("_frombuffer without a dtype")),
            };
            let shape = shape_of(args.get(2))?;
            let fortran = matches!(args.get(3), Some(Value::Str(o)) if o == "F");
            Ok(Obj::Value(Value::Array(NdArray {
                dtype,
                shape,
                fortran,
                data,
            })))
        }
        _ => Err(err(format!("unsupported NumPy callable {module}.{name}"))),
    }
}

fn shape_of(v: Option<&Value>) -> Result<Vec<usize>> {
    v.and_then(Value::items)
        .ok_or_else(|| err("array without a shape"))?
        .iter()
        .map(|d| {
            d.as_f64()
                .map(|x| x as usize)
                .ok_or_else(|| err("bad array shape"))
        })
        .collect()
}

fn build(obj: Obj, state: Value) -> Result<Obj> {
    let items = state.items().map(<[Value]>::to_vec).unwrap_or_default();
    match obj {
        // dtype state: (version, byte order, …).
        Obj::Dtype(code) => {
            let order = match items.get(1) {
                Some(Value::Str(o)) if o != "|" && o != "=" => o.clone(),
                _ => String::new(),
            };
            Ok(Obj::Dtype(format!("{order}{code}")))
        }
        // ndarray state: (version, shape, dtype, is_fortran, data).
        Obj::PendingArray => {
            let shape = shape_of(items.get(1))?;
            let dtype = match items.get(2) {
                Some(Value::Str(s)) => s.clone(),
                _ => return Err(err("array state without a dtype")),
            };
            let fortran = matches!(items.get(3), Some(Value::Bool(true)));
            let data = match items.get(4) {
                Some(Value::Bytes(b)) => b.clone(),
                _ => {
                    return Err(err(
                        "array state without raw data (object arrays are not supported)",
                    ));
                }
            };
            Ok(Obj::Value(Value::Array(NdArray {
                dtype,
                shape,
                fortran,
                data,
            })))
        }
        // An OrderedDict's instance attributes (a state dict's `_metadata`): not data.
        dict @ Obj::Shared(_) if matches!(state, Value::Dict(_) | Value::None) => Ok(dict),
        other => Err(err(format!("BUILD on unsupported object {other:?}"))),
    }
}
