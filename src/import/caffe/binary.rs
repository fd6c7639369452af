//! The caffemodel reader and writer: a binary `NetParameter` through the
//! `prost` messages of [`super::proto`], lowered by the same code as a
//! prototxt; and [`attach_weights`], which moves a model's blobs onto the
//! layers of a net read from a prototxt.
//!
//! Invariant: decoding allocates at most a small multiple of the file's
//! length. `prost` refuses a length prefix longer than what is left, blob
//! values are only ever as many as the file holds (a shape is checked against
//! them, never used to allocate), and before `prost` builds its structs the
//! message entries it would build (layers, blobs, rules, shapes, names) are
//! counted by a scan that allocates nothing: more than [`MAX_ENTRIES`] of
//! them (each a struct of a few hundred bytes from as little as 2 bytes of
//! file) and the file is refused.

use super::model::{lower, Blob, CaffeNet, Issue};
use super::proto;
use prost::Message;
use std::collections::HashMap;

/// Most message and string entries (layers, blobs, include rules, shapes,
/// bottoms and tops) a caffemodel may hold; real ones hold a few thousand.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Why a caffemodel could not be read (or its weights attached).
#[derive(Debug, thiserror::Error)]
pub enum CaffeModelError {
    /// Not a well-formed `NetParameter` (the source names the message and
    /// field where decoding stopped).
    #[error("not a Caffe model (binary NetParameter): {0}")]
    Decode(#[from] prost::DecodeError),
    #[error(
        "the model has more than {limit} layers, blobs and names ({count}); refusing to decode it"
    )]
    TooManyEntries { count: usize, limit: usize },
    /// A field has a value Caffe would refuse (a zero stride, an unknown
    /// pooling method, ...); `location` is e.g.
    /// "layer `conv1` (NetParameter.layer[0].convolution_param.stride[0])".
    #[error("{location}: {message}{more}")]
    Invalid {
        location: String,
        message: String,
        /// ", and N more problems" when there are several.
        more: String,
    },
    /// A blob whose values do not fit its shape.
    #[error("{location}: blob {blob} {message}")]
    Blob {
        location: String,
        blob: usize,
        message: String,
    },
    /// Two layers of the weights file with the same name both carry blobs.
    #[error("the weights have two layers named `{name}` with blobs (NetParameter.{first} and NetParameter.{second})")]
    DuplicateWeights {
        name: String,
        first: String,
        second: String,
    },
}

/// What [`attach_weights`] did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttachReport {
    /// Names of the layers that received blobs, in the net's order.
    pub attached: Vec<String>,
    /// Names of the weights' layers with blobs that no layer of the net
    /// has (Caffe ignores them too; a caller may warn: a renamed layer ends
    /// up here).
    pub unused: Vec<String>,
}

/// Decodes a binary `.caffemodel` (a `NetParameter` in V2 `layer` or V1
/// `layers` form) into a net whose layers carry their blobs.
pub fn decode_caffemodel(bytes: &[u8]) -> Result<CaffeNet, CaffeModelError> {
    let count = count_entries(bytes);
    if count > MAX_ENTRIES {
        return Err(CaffeModelError::TooManyEntries {
            count,
            limit: MAX_ENTRIES,
        });
    }
    let mut message = proto::NetParameter::decode(bytes)?;
    let mut net = lower(&message).map_err(|issues| invalid(&issues, &message))?;
    let list = if message.layer.is_empty() {
        "layers"
    } else {
        "layer"
    };
    // The blobs are moved out of the messages, not copied: a model's
    // weights are in memory once.
    let blob_lists: Vec<Vec<proto::BlobProto>> = if message.layer.is_empty() {
        message
            .layers
            .iter_mut()
            .map(|layer| std::mem::take(&mut layer.blobs))
            .collect()
    } else {
        message
            .layer
            .iter_mut()
            .map(|layer| std::mem::take(&mut layer.blobs))
            .collect()
    };
    for (idx, (layer, blobs)) in net.layers.iter_mut().zip(blob_lists).enumerate() {
        let location = format!("layer `{}` (NetParameter.{list}[{idx}])", layer.name);
        layer.blobs = blobs
            .into_iter()
            .enumerate()
            .map(|(blob_idx, blob)| {
                blob_of(blob).map_err(|message| CaffeModelError::Blob {
                    location: location.clone(),
                    blob: blob_idx,
                    message,
                })
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(net)
}

/// Encodes a net as a binary `.caffemodel` in the V2 syntax (`layer`, field
/// 100), blobs included: [`decode_caffemodel`] gives back the same net, but
/// for the spans (which a binary file has not).
pub fn encode_caffemodel(net: &CaffeNet) -> Vec<u8> {
    super::model::raise(net).encode_to_vec()
}

/// Gives each layer of `net` the blobs of the layer of `weights` with the
/// same name (every layer of that name, should the net have several, as a
/// train/test prototxt may). Layers of `weights` without blobs are ignored;
/// those with blobs but no match in `net` are listed in the report, not
/// refused (Caffe ignores them: a training net's extra heads, ...). Two
/// layers of `weights` with one name and both with blobs are an error. Shapes
/// are not checked against the layers' parameters here: that is the
/// converter's job, which also decides what a layer lacking blobs means.
pub fn attach_weights(
    net: &mut CaffeNet,
    weights: CaffeNet,
) -> Result<AttachReport, CaffeModelError> {
    let mut report = AttachReport::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (idx, layer) in weights.layers.iter().enumerate() {
        if layer.blobs.is_empty() {
            continue;
        }
        if let Some(&first) = seen.get(&layer.name) {
            return Err(CaffeModelError::DuplicateWeights {
                name: layer.name.clone(),
                first: format!("layer[{first}]"),
                second: format!("layer[{idx}]"),
            });
        }
        seen.insert(layer.name.clone(), idx);
    }
    // The net's layers by name (a train/test net may use one name twice).
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (idx, layer) in net.layers.iter().enumerate() {
        by_name.entry(layer.name.clone()).or_default().push(idx);
    }
    for layer in weights.layers {
        if layer.blobs.is_empty() {
            continue;
        }
        let Some(targets) = by_name.get(layer.name.as_str()) else {
            report.unused.push(layer.name);
            continue;
        };
        for &idx in targets {
            net.layers[idx].blobs = layer.blobs.clone();
        }
    }
    report.attached = net
        .layers
        .iter()
        .filter(|layer| seen.contains_key(&layer.name))
        .map(|layer| layer.name.clone())
        .collect();
    Ok(report)
}

/// The lowering's issues as one error naming the first.
fn invalid(issues: &[Issue], message: &proto::NetParameter) -> CaffeModelError {
    let Some(first) = issues.first() else {
        return CaffeModelError::Invalid {
            location: "NetParameter".into(),
            message: "invalid".into(),
            more: String::new(),
        };
    };
    let field = if first.field.is_empty() {
        String::new()
    } else {
        format!(".{}", first.field)
    };
    let location = match first.layer {
        Some(idx) => {
            let (list, name) = if message.layer.is_empty() {
                (
                    "layers",
                    message.layers.get(idx).and_then(|l| l.name.clone()),
                )
            } else {
                ("layer", message.layer.get(idx).and_then(|l| l.name.clone()))
            };
            format!(
                "layer `{}` (NetParameter.{list}[{idx}]{field})",
                name.unwrap_or_default()
            )
        }
        None => format!("NetParameter{field}"),
    };
    let more = match issues.len() {
        1 => String::new(),
        2 => ", and 1 more problem".to_string(),
        n => format!(", and {} more problems", n - 1),
    };
    CaffeModelError::Invalid {
        location,
        message: first.message.clone(),
        more,
    }
}

/// A blob's shape and values, checked against each other the way Caffe's
/// `Blob::FromProto` does (with `double_data` when it has values).
fn blob_of(blob: proto::BlobProto) -> Result<Blob, String> {
    let legacy = blob.num.is_some()
        || blob.channels.is_some()
        || blob.height.is_some()
        || blob.width.is_some();
    let raw: Vec<i64> = if legacy {
        [blob.num, blob.channels, blob.height, blob.width]
            .iter()
            .map(|d| i64::from(d.unwrap_or(0)))
            .collect()
    } else {
        blob.shape
            .as_ref()
            .map(|s| s.dim.clone())
            .unwrap_or_default()
    };
    let mut shape = Vec::with_capacity(raw.len());
    for &dim in &raw {
        match usize::try_from(dim) {
            Ok(dim) => shape.push(dim),
            Err(_) => {
                return Err(format!(
                    "has a negative dimension ({})",
                    shape_text_i64(&raw)
                ))
            }
        }
    }
    if legacy {
        // Legacy blobs were indexed from the end: 1x1xNxK is an NxK matrix.
        let keep_from = shape
            .iter()
            .position(|&d| d != 1)
            .unwrap_or(shape.len() - 1);
        shape.drain(..keep_from);
    }
    let values = if blob.double_data.is_empty() {
        blob.data.len()
    } else {
        blob.double_data.len()
    };
    let needed = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if needed != Some(values) {
        let needs =
            needed.map_or_else(|| "more than can be counted".to_string(), |n| n.to_string());
        return Err(format!(
            "has {values} values but its shape {} needs {needs}",
            shape_text(&shape)
        ));
    }
    let data = if blob.double_data.is_empty() {
        blob.data
    } else {
        blob.double_data.iter().map(|&v| v as f32).collect()
    };
    Ok(Blob {
        shape,
        data,
        legacy,
    })
}

fn shape_text(shape: &[usize]) -> String {
    if shape.is_empty() {
        return "(scalar)".to_string();
    }
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

fn shape_text_i64(shape: &[i64]) -> String {
    shape
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

/// The fields of one message level of the protobuf wire format, without
/// allocating: `(field number, payload)` where the payload of a
/// length-delimited field is its bytes (empty for the other wire types).
/// Stops at the first malformed field (prost then reports it).
struct WireFields<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for WireFields<'a> {
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let key = read_varint(&mut self.bytes)?;
        let field = key >> 3;
        let payload: &[u8] = match key & 7 {
            0 => {
                read_varint(&mut self.bytes)?;
                &[]
            }
            1 => {
                self.bytes = self.bytes.get(8..)?;
                &[]
            }
            2 => {
                let len = usize::try_from(read_varint(&mut self.bytes)?).ok()?;
                let payload = self.bytes.get(..len)?;
                self.bytes = &self.bytes[len..];
                payload
            }
            5 => {
                self.bytes = self.bytes.get(4..)?;
                &[]
            }
            // Groups (3, 4) are not used by Caffe; prost reports them.
            _ => return None,
        };
        Some((field, payload))
    }
}

fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in 0..10 {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// How many entries prost would build a struct or string for: the net's
/// layers, inputs and shapes, and in each layer its names, rules and blobs.
fn count_entries(bytes: &[u8]) -> usize {
    let mut count = 0usize;
    for (field, payload) in (WireFields { bytes }) {
        count += 1;
        // The blobs and the include / exclude rules of a layer: their own
        // fields (shapes, phases) are entries too.
        let nested: [u64; 3] = match field {
            100 => [7, 8, 9],
            2 => [6, 32, 33],
            _ => continue,
        };
        for (inner, inner_payload) in (WireFields { bytes: payload }) {
            count += 1;
            if nested.contains(&inner) {
                count += WireFields {
                    bytes: inner_payload,
                }
                .count();
            }
        }
        if count > MAX_ENTRIES {
            break;
        }
    }
    count
}
