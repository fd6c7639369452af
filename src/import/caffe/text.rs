//! The prototxt reader: protobuf text format to a generic tree (pest,
//! `grammar/caffe.pest`), the tree to Caffe's messages ([`super::proto`]),
//! then the shared lowering ([`super::model::lower`]).
//!
//! Each field's span is remembered by its dotted path (per layer), so a
//! problem the lowering finds in `convolution_param.kernel_size[1]` points at
//! that value in the file. Fields Caffe has but the importer does not read
//! (`param { lr_mult }`, `weight_filler`, `data_param`, ...) and fields of
//! unknown names are skipped; a known field with a value of the wrong type is
//! an error.
//!
//! Invariant: nothing here recurses deeper than [`MAX_NESTING`] levels: the
//! braces are counted before pest runs, and pest (a recursive-descent parser)
//! and the tree walk never see deeper text.

use super::model::{code, lower, CaffeNet, Issue, V1_TYPES};
use super::proto;
use crate::diagnostic::{Diagnostic, Source};
use pest::iterators::Pair;
use pest::Parser;
use std::collections::HashMap;
use std::ops::Range;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/caffe.pest"]
struct ProtoTextParser;

/// Most nested `{` levels a prototxt may have (Caffe's go 4 deep).
pub const MAX_NESTING: usize = 32;

type Span = Range<usize>;

/// One `name: value` or `name { ... }` of the file.
#[derive(Debug)]
struct Field<'t> {
    name: &'t str,
    value: Value<'t>,
    /// The whole field, name to value (or closing brace).
    span: Span,
}

#[derive(Debug)]
enum Value<'t> {
    Message(Vec<Field<'t>>),
    Scalar(Scalar<'t>),
    List(Vec<Scalar<'t>>, Span),
}

#[derive(Debug)]
struct Scalar<'t> {
    kind: ScalarKind,
    text: &'t str,
    span: Span,
}

#[derive(Debug)]
enum ScalarKind {
    Number,
    Ident,
    /// The unescaped, joined text of one or more adjacent quoted strings.
    Str(String),
}

/// Parses a prototxt into a [`CaffeNet`]; on failure returns every problem
/// found (a syntax error stops at the first).
pub fn parse_prototxt(source: &Source) -> Result<CaffeNet, Vec<Diagnostic>> {
    let text = source.text.as_str();
    check_braces(text)?;
    let mut pairs =
        ProtoTextParser::parse(Rule::file, text).map_err(|err| vec![syntax_error(&err, text)])?;
    let Some(root) = pairs.next() else {
        return Ok(CaffeNet::default());
    };
    let fields: Vec<Field<'_>> = root
        .into_inner()
        .filter(|pair| pair.as_rule() == Rule::field)
        .map(field)
        .collect();
    let mut reader = Reader::default();
    let net = reader.net(&fields);
    if !reader.diagnostics.is_empty() {
        return Err(reader.diagnostics);
    }
    match lower(&net) {
        Ok(mut lowered) => {
            let layer_spans = if net.layer.is_empty() {
                &reader.v1_layers
            } else {
                &reader.v2_layers
            };
            for (layer, spans) in lowered.layers.iter_mut().zip(layer_spans) {
                layer.span = Some(spans.whole.clone());
            }
            if let Some(input) = &mut lowered.input {
                input.span = reader
                    .net_spans
                    .by_path
                    .get("input[0]")
                    .cloned()
                    .or_else(|| input_layer_span(&lowered.layers, &input.name));
            }
            Ok(lowered)
        }
        Err(issues) => Err(issues
            .iter()
            .map(|issue| reader.diagnose(issue, &net))
            .collect()),
    }
}

/// The span of the `Input` layer whose top is `name`.
fn input_layer_span(layers: &[super::CaffeLayer], name: &str) -> Option<Span> {
    layers
        .iter()
        .find(|layer| layer.kind == "Input" && layer.tops.first().map(String::as_str) == Some(name))
        .and_then(|layer| layer.span.clone())
}

fn span_of(pair: &Pair<'_, Rule>) -> Span {
    let span = pair.as_span();
    span.start()..span.end()
}

fn field(pair: Pair<'_, Rule>) -> Field<'_> {
    let span = span_of(&pair);
    let mut inner = pair.into_inner();
    let name = inner.next().map_or("", |name| name.as_str());
    let value = match inner.next() {
        Some(value) => value_of(value),
        None => Value::Message(Vec::new()),
    };
    Field { name, value, span }
}

fn value_of(pair: Pair<'_, Rule>) -> Value<'_> {
    match pair.as_rule() {
        Rule::message => Value::Message(
            pair.into_inner()
                .filter(|part| part.as_rule() == Rule::field)
                .map(field)
                .collect(),
        ),
        Rule::list => {
            let span = span_of(&pair);
            Value::List(pair.into_inner().map(scalar).collect(), span)
        }
        _ => Value::Scalar(scalar(pair)),
    }
}

fn scalar(pair: Pair<'_, Rule>) -> Scalar<'_> {
    let span = span_of(&pair);
    let text = pair.as_str();
    let kind = match pair.as_rule() {
        Rule::number => ScalarKind::Number,
        Rule::strings => {
            let mut bytes = Vec::new();
            for piece in pair.into_inner() {
                let inner = piece.into_inner().next().map_or("", |inner| inner.as_str());
                unescape(inner, &mut bytes);
            }
            ScalarKind::Str(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => ScalarKind::Ident,
    };
    Scalar { kind, text, span }
}

/// Appends the bytes a quoted string's body stands for (C escapes, `\xHH`,
/// octal `\NNN`); an unknown escape stands for the character itself.
fn unescape(body: &str, out: &mut Vec<u8>) {
    let bytes = body.as_bytes();
    let mut idx = 0;
    while idx < bytes.len() {
        let b = bytes[idx];
        idx += 1;
        if b != b'\\' || idx >= bytes.len() {
            out.push(b);
            continue;
        }
        let e = bytes[idx];
        idx += 1;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'x' | b'X' => {
                let mut value = 0u32;
                let mut n = 0;
                while n < 2 && idx < bytes.len() && bytes[idx].is_ascii_hexdigit() {
                    value = value * 16 + char::from(bytes[idx]).to_digit(16).unwrap_or(0);
                    idx += 1;
                    n += 1;
                }
                out.push(value as u8);
            }
            b'0'..=b'7' => {
                let mut value = u32::from(e - b'0');
                let mut n = 1;
                while n < 3 && idx < bytes.len() && (b'0'..=b'7').contains(&bytes[idx]) {
                    value = value * 8 + u32::from(bytes[idx] - b'0');
                    idx += 1;
                    n += 1;
                }
                out.push((value & 0xff) as u8);
            }
            other => out.push(other),
        }
    }
}

/// Counts braces (outside strings and comments) before pest runs: nesting
/// deeper than [`MAX_NESTING`], a `}` with nothing open and a `{` never
/// closed are reported here, naming the block.
fn check_braces(text: &str) -> Result<(), Vec<Diagnostic>> {
    let bytes = text.as_bytes();
    let mut open: Vec<usize> = Vec::new();
    let mut idx = 0;
    while idx < bytes.len() {
        match bytes[idx] {
            b'#' => {
                while idx < bytes.len() && bytes[idx] != b'\n' {
                    idx += 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                idx += 1;
                while idx < bytes.len() && bytes[idx] != quote && bytes[idx] != b'\n' {
                    idx += if bytes[idx] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' => {
                open.push(idx);
                if open.len() > MAX_NESTING {
                    return Err(vec![Diagnostic::error(
                        code::TOO_DEEP,
                        format!("blocks nest deeper than {MAX_NESTING} levels"),
                    )
                    .at(idx..idx + 1, "too deep here")]);
                }
            }
            b'}' => {
                let Some(_) = open.pop() else {
                    return Err(vec![Diagnostic::error(
                        code::SYNTAX,
                        "syntax error: unexpected `}`: no block is open here",
                    )
                    .at(idx..idx + 1, "nothing to close")
                    .hint("remove it, or add the block's opening `name {`")]);
                };
            }
            _ => {}
        }
        idx += 1;
    }
    if let Some(&at) = open.last() {
        let name = block_name(text, at);
        let end = text.len();
        return Err(vec![Diagnostic::error(
            code::SYNTAX,
            format!("syntax error: expected `}}` to close `{name}`"),
        )
        .at(end..end, "the file ends here")
        .also(at..at + 1, format!("`{name}` opened here"))
        .hint("add the missing `}`")]);
    }
    Ok(())
}

/// The field name written before the `{` at `at` (`layer` in `layer {` or
/// `layer: {`), or "block".
fn block_name(text: &str, at: usize) -> &str {
    let before = text[..at].trim_end();
    let before = before.strip_suffix(':').unwrap_or(before).trim_end();
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(0, |(pos, c)| pos + c.len_utf8());
    let name = &before[start..];
    if name.is_empty() {
        "block"
    } else {
        name
    }
}

/// A pest error as a diagnostic saying what was expected where.
fn syntax_error(err: &pest::error::Error<Rule>, text: &str) -> Diagnostic {
    let at = match err.location {
        pest::error::InputLocation::Pos(pos) => pos,
        pest::error::InputLocation::Span((start, _)) => start,
    }
    .min(text.len());
    let found = text[at..].chars().next();
    let end = at + found.map_or(0, char::len_utf8);
    let found = match found {
        None => "the end of the file".to_string(),
        Some(c) if c.is_whitespace() || c.is_control() => format!("{c:?}"),
        Some(c) => format!("`{c}`"),
    };
    let expected = match &err.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => {
            let mut words: Vec<&str> = positives.iter().map(|rule| rule_words(*rule)).collect();
            words.sort_unstable();
            words.dedup();
            words
        }
        pest::error::ErrorVariant::CustomError { .. } => Vec::new(),
    };
    // A quote that opens a string never closed on its line: say so, rather
    // than that a value was expected where the string starts.
    let rest = &text[at..];
    if let Some(quote) = rest.chars().next().filter(|c| matches!(c, '"' | '\'')) {
        let line = &rest[1..rest.find('\n').unwrap_or(rest.len())];
        if !closes(line, quote) {
            return Diagnostic::error(
                code::SYNTAX,
                "syntax error: a string is not closed on its line",
            )
            .at(at..end, "this string")
            .hint(format!("end it with `{quote}`; a string cannot span lines"));
        }
    }
    // After a field name a `:` (or a block) is expected; pest names only
    // the block.
    let after_name = !text[..at].trim_end().ends_with(':');
    let mut expected = expected;
    if after_name && expected.contains(&"`{`") {
        expected.retain(|word| *word != "`{`");
        expected.insert(0, "`:` or `{`");
    }
    let title = if expected.is_empty() {
        format!("syntax error: unexpected {found}")
    } else {
        format!(
            "syntax error: expected {}, found {found}",
            join_or(&expected)
        )
    };
    Diagnostic::error(code::SYNTAX, title)
        .at(at..end, "here")
        .hint("a field is `name: value` or `name { ... }`; strings are quoted")
}

/// Whether `line` (the text after an opening quote) holds the closing one.
fn closes(line: &str, quote: char) -> bool {
    let mut escaped = false;
    for c in line.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            c if c == quote => return true,
            _ => {}
        }
    }
    false
}

fn rule_words(rule: Rule) -> &'static str {
    match rule {
        Rule::field | Rule::name => "a field name",
        Rule::message => "`{`",
        Rule::list => "`[`",
        Rule::strings | Rule::string => "a string",
        Rule::number => "a number",
        Rule::ident => "a name",
        Rule::EOI => "the end of the file",
        _ => "a value",
    }
}

fn join_or(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Where fields are, by dotted path (`convolution_param.kernel_size[1]`).
#[derive(Default)]
struct Spans {
    by_path: HashMap<String, Span>,
    /// How many values each repeated field has had so far.
    counts: HashMap<String, usize>,
}

/// Spans of one layer: the whole block and its fields.
#[derive(Default)]
struct LayerSpans {
    whole: Span,
    fields: Spans,
}

/// Walks the tree into Caffe's messages, remembering spans and collecting
/// diagnostics for values of the wrong type.
#[derive(Default)]
struct Reader {
    diagnostics: Vec<Diagnostic>,
    net_spans: Spans,
    v2_layers: Vec<LayerSpans>,
    v1_layers: Vec<LayerSpans>,
}

/// Where the spans of the fields being read go, and under which prefix.
struct Place<'a> {
    spans: &'a mut Spans,
    prefix: String,
}

impl Place<'_> {
    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
}

/// The fields V2 `layer` and V1 `layers` blocks share (same names, same
/// value types): read into `$layer`; any other field is skipped (Caffe
/// has many the importer does not need).
macro_rules! shared_layer_field {
    ($self:ident, $layer:ident, $f:ident, $place:ident) => {
        match $f.name {
            "name" => {
                let value = $self.string($f, $place);
                $self.set(&mut $layer.name, value, $f, $place);
            }
            "bottom" => {
                for (value, _) in $self.repeated($f, $place, Self::scalar_string) {
                    $layer.bottom.push(value);
                }
            }
            "top" => {
                for (value, _) in $self.repeated($f, $place, Self::scalar_string) {
                    $layer.top.push(value);
                }
            }
            "include" => {
                let idx = $layer.include.len();
                if let Some(rule) = $self.indexed_message($f, $place, idx, Self::rule) {
                    $layer.include.push(rule);
                }
            }
            "exclude" => {
                let idx = $layer.exclude.len();
                if let Some(rule) = $self.indexed_message($f, $place, idx, Self::rule) {
                    $layer.exclude.push(rule);
                }
            }
            "convolution_param" => {
                let value = $self.message($f, $place, Self::conv);
                $self.set(&mut $layer.convolution_param, value, $f, $place);
            }
            "pooling_param" => {
                let value = $self.message($f, $place, Self::pool);
                $self.set(&mut $layer.pooling_param, value, $f, $place);
            }
            "inner_product_param" => {
                let value = $self.message($f, $place, Self::inner_product);
                $self.set(&mut $layer.inner_product_param, value, $f, $place);
            }
            "relu_param" => {
                let value = $self.message($f, $place, Self::relu);
                $self.set(&mut $layer.relu_param, value, $f, $place);
            }
            "dropout_param" => {
                let value = $self.message($f, $place, Self::dropout);
                $self.set(&mut $layer.dropout_param, value, $f, $place);
            }
            _ => {}
        }
    };
}

impl Reader {
    fn net(&mut self, fields: &[Field<'_>]) -> proto::NetParameter {
        let mut net = proto::NetParameter::default();
        let mut spans = std::mem::take(&mut self.net_spans);
        let mut place = Place {
            spans: &mut spans,
            prefix: String::new(),
        };
        for f in fields {
            match f.name {
                "name" => {
                    let value = self.string(f, &mut place);
                    self.set(&mut net.name, value, f, &mut place);
                }
                "input" => {
                    for (value, _) in self.repeated(f, &mut place, Self::scalar_string) {
                        net.input.push(value);
                    }
                }
                "input_dim" => {
                    for (value, _) in self.repeated(f, &mut place, |r, s, n| {
                        r.scalar_int(s, n, i32::MIN.into(), i32::MAX.into())
                    }) {
                        net.input_dim.push(value as i32);
                    }
                }
                "input_shape" => {
                    let idx = net.input_shape.len();
                    if let Some(shape) = self.indexed_message(f, &mut place, idx, Self::blob_shape)
                    {
                        net.input_shape.push(shape);
                    }
                }
                "layer" => {
                    let mut layer_spans = LayerSpans {
                        whole: f.span.clone(),
                        ..LayerSpans::default()
                    };
                    if let Some(body) = self.body(f) {
                        let mut inner = Place {
                            spans: &mut layer_spans.fields,
                            prefix: String::new(),
                        };
                        net.layer.push(self.v2_layer(body, &mut inner));
                        self.v2_layers.push(layer_spans);
                    }
                }
                "layers" => {
                    let mut layer_spans = LayerSpans {
                        whole: f.span.clone(),
                        ..LayerSpans::default()
                    };
                    if let Some(body) = self.body(f) {
                        let mut inner = Place {
                            spans: &mut layer_spans.fields,
                            prefix: String::new(),
                        };
                        net.layers.push(self.v1_layer(body, &mut inner));
                        self.v1_layers.push(layer_spans);
                    }
                }
                _ => {}
            }
        }
        self.net_spans = spans;
        net
    }

    fn v2_layer(&mut self, fields: &[Field<'_>], place: &mut Place<'_>) -> proto::LayerParameter {
        let mut layer = proto::LayerParameter::default();
        for f in fields {
            match f.name {
                "type" => {
                    let value = match &f.value {
                        Value::Scalar(Scalar {
                            kind: ScalarKind::Ident,
                            text,
                            span,
                        }) => {
                            let hint = V1_TYPES
                                .iter()
                                .find(|(name, _, _)| name == text)
                                .filter(|(_, _, kind)| !kind.is_empty())
                                .map_or_else(
                                    || "write the type as a quoted string".to_string(),
                                    |(_, _, kind)| format!("write `type: \"{kind}\"` (the V1 name {text} belongs in a `layers` block)"),
                                );
                            self.diagnostics.push(
                                Diagnostic::error(code::WRONG_TYPE, format!("the `type` of a `layer` is a string such as \"Convolution\", found {text}"))
                                    .at(span.clone(), "not a string")
                                    .hint(hint),
                            );
                            None
                        }
                        _ => self.string(f, place),
                    };
                    self.set(&mut layer.r#type, value, f, place);
                }
                "batch_norm_param" => {
                    let value = self.message(f, place, Self::batch_norm);
                    self.set(&mut layer.batch_norm_param, value, f, place);
                }
                "scale_param" => {
                    let value = self.message(f, place, Self::scale);
                    self.set(&mut layer.scale_param, value, f, place);
                }
                "input_param" => {
                    let value = self.message(f, place, Self::input_param);
                    self.set(&mut layer.input_param, value, f, place);
                }
                _ => {
                    shared_layer_field!(self, layer, f, place);
                }
            }
        }
        layer
    }

    fn v1_layer(&mut self, fields: &[Field<'_>], place: &mut Place<'_>) -> proto::V1LayerParameter {
        let mut layer = proto::V1LayerParameter::default();
        for f in fields {
            match f.name {
                "type" => {
                    let value = match &f.value {
                        Value::Scalar(Scalar {
                            kind: ScalarKind::Str(text),
                            span,
                            ..
                        }) => {
                            let hint = V1_TYPES
                                .iter()
                                .find(|(_, _, kind)| kind == text && !kind.is_empty())
                                .map_or_else(
                                    || "V2 layers are written `layer { type: \"Convolution\" }`".to_string(),
                                    |(name, _, _)| format!("write `type: {name}`, or use a V2 `layer` block for \"{text}\""),
                                );
                            self.diagnostics.push(
                                Diagnostic::error(code::WRONG_TYPE, "the `type` of a V1 `layers` block is a name such as CONVOLUTION, found a string")
                                    .at(span.clone(), "a string")
                                    .hint(hint),
                            );
                            None
                        }
                        _ => {
                            let names: Vec<(&str, i32)> =
                                V1_TYPES.iter().map(|(name, n, _)| (*name, *n)).collect();
                            self.enumeration(f, place, &names)
                        }
                    };
                    self.set(&mut layer.r#type, value, f, place);
                }
                _ => {
                    shared_layer_field!(self, layer, f, place);
                }
            }
        }
        layer
    }

    fn rule(&mut self, fields: &[Field<'_>], place: &mut Place<'_>) -> proto::NetStateRule {
        let mut rule = proto::NetStateRule::default();
        for f in fields {
            if f.name == "phase" {
                let value = self.enumeration(f, place, &[("TRAIN", 0), ("TEST", 1)]);
                self.set(&mut rule.phase, value, f, place);
            }
        }
        rule
    }

    fn blob_shape(&mut self, fields: &[Field<'_>], place: &mut Place<'_>) -> proto::BlobShape {
        let mut shape = proto::BlobShape::default();
        for f in fields {
            if f.name == "dim" {
                for (value, _) in self.repeated(f, place, |r, s, n| {
                    r.scalar_int(s, n, i64::MIN.into(), i64::MAX.into())
                }) {
                    shape.dim.push(value as i64);
                }
            }
        }
        shape
    }

    fn input_param(
        &mut self,
        fields: &[Field<'_>],
        place: &mut Place<'_>,
    ) -> proto::InputParameter {
        let mut param = proto::InputParameter::default();
        for f in fields {
            if f.name == "shape" {
                let idx = param.shape.len();
                if let Some(shape) = self.indexed_message(f, place, idx, Self::blob_shape) {
                    param.shape.push(shape);
                }
            }
        }
        param
    }

    fn conv(&mut self, fields: &[Field<'_>], place: &mut Place<'_>) -> proto::ConvolutionParameter {
        let mut p = proto::ConvolutionParameter::default();
        for f in fields {
            let (repeated, min): (Option<&mut Vec<u32>>, u32) = match f.name {
                "pad" => (Some(&mut p.pad), 0),
                "kernel_size" => (Some(&mut p.kernel_size), 1),
                "stride" => (Some(&mut p.stride), 1),
                "dilation" => (Some(&mut p.dilation), 1),
                _ => (None, 0),
            };
            if let Some(list) = repeated {
                for (value, _) in self.repeated(f, place, |r, s, n| {
                    r.scalar_int(s, n, min.into(), u32::MAX.into())
                }) {
                    list.push(value as u32);
                }
                continue;
            }
            let (slot, min) = match f.name {
                "num_output" => (&mut p.num_output, 1),
                "pad_h" => (&mut p.pad_h, 0),
                "pad_w" => (&mut p.pad_w, 0),
                "kernel_h" => (&mut p.kernel_h, 1),
                "kernel_w" => (&mut p.kernel_w, 1),
                "stride_h" => (&mut p.stride_h, 1),
                "stride_w" => (&mut p.stride_w, 1),
                "group" => (&mut p.group, 1),
                "bias_term" => {
                    let value = self.boolean(f, place);
                    self.set(&mut p.bias_term, value, f, place);
                    continue;
                }
                _ => continue,
            };
            let value = self.uint(f, place, min);
            self.set(slot, value, f, place);
        }
        p
    }

    fn pool(&mut self, fields: &[Field<'_>], place: &mut Place<'_>) -> proto::PoolingParameter {
        let mut p = proto::PoolingParameter::default();
        for f in fields {
            let (slot, min) = match f.name {
                "pad" => (&mut p.pad, 0),
                "pad_h" => (&mut p.pad_h, 0),
                "pad_w" => (&mut p.pad_w, 0),
                "kernel_size" => (&mut p.kernel_size, 1),
                "kernel_h" => (&mut p.kernel_h, 1),
                "kernel_w" => (&mut p.kernel_w, 1),
                "stride" => (&mut p.stride, 1),
                "stride_h" => (&mut p.stride_h, 1),
                "stride_w" => (&mut p.stride_w, 1),
                "pool" => {
                    let names = [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)];
                    let value = self.enumeration(f, place, &names);
                    self.set(&mut p.pool, value, f, place);
                    continue;
                }
                "round_mode" => {
                    let value = self.enumeration(f, place, &[("CEIL", 0), ("FLOOR", 1)]);
                    self.set(&mut p.round_mode, value, f, place);
                    continue;
                }
                "global_pooling" => {
                    let value = self.boolean(f, place);
                    self.set(&mut p.global_pooling, value, f, place);
                    continue;
                }
                _ => continue,
            };
            let value = self.uint(f, place, min);
            self.set(slot, value, f, place);
        }
        p
    }

    fn inner_product(
        &mut self,
        fields: &[Field<'_>],
        place: &mut Place<'_>,
    ) -> proto::InnerProductParameter {
        let mut p = proto::InnerProductParameter::default();
        for f in fields {
            match f.name {
                "num_output" => {
                    let value = self.uint(f, place, 1);
                    self.set(&mut p.num_output, value, f, place);
                }
                "bias_term" => {
                    let value = self.boolean(f, place);
                    self.set(&mut p.bias_term, value, f, place);
                }
                "transpose" => {
                    let value = self.boolean(f, place);
                    self.set(&mut p.transpose, value, f, place);
                }
                "axis" => {
                    let value = self.int32(f, place);
                    self.set(&mut p.axis, value, f, place);
                }
                _ => {}
            }
        }
        p
    }

    fn relu(&mut self, fields: &[Field<'_>], place: &mut Place<'_>) -> proto::ReLuParameter {
        let mut p = proto::ReLuParameter::default();
        for f in fields.iter().filter(|f| f.name == "negative_slope") {
            let value = self.float(f, place);
            self.set(&mut p.negative_slope, value, f, place);
        }
        p
    }

    fn dropout(&mut self, fields: &[Field<'_>], place: &mut Place<'_>) -> proto::DropoutParameter {
        let mut p = proto::DropoutParameter::default();
        for f in fields.iter().filter(|f| f.name == "dropout_ratio") {
            let value = self.float(f, place);
            self.set(&mut p.dropout_ratio, value, f, place);
        }
        p
    }

    fn batch_norm(
        &mut self,
        fields: &[Field<'_>],
        place: &mut Place<'_>,
    ) -> proto::BatchNormParameter {
        let mut p = proto::BatchNormParameter::default();
        for f in fields {
            match f.name {
                "use_global_stats" => {
                    let value = self.boolean(f, place);
                    self.set(&mut p.use_global_stats, value, f, place);
                }
                "eps" => {
                    let value = self.float(f, place);
                    self.set(&mut p.eps, value, f, place);
                }
                _ => {}
            }
        }
        p
    }

    fn scale(&mut self, fields: &[Field<'_>], place: &mut Place<'_>) -> proto::ScaleParameter {
        let mut p = proto::ScaleParameter::default();
        for f in fields {
            match f.name {
                "bias_term" => {
                    let value = self.boolean(f, place);
                    self.set(&mut p.bias_term, value, f, place);
                }
                "axis" => {
                    let value = self.int32(f, place);
                    self.set(&mut p.axis, value, f, place);
                }
                "num_axes" => {
                    let value = self.int32(f, place);
                    self.set(&mut p.num_axes, value, f, place);
                }
                _ => {}
            }
        }
        p
    }

    /// Stores a singular field's value; a second one is an error naming the
    /// first.
    fn set<T>(
        &mut self,
        slot: &mut Option<T>,
        value: Option<T>,
        f: &Field<'_>,
        place: &mut Place<'_>,
    ) {
        let path = place.path(f.name);
        if slot.is_some() {
            let mut diag = Diagnostic::error(code::TWICE, format!("`{}` is given twice", f.name))
                .at(f.span.clone(), "given again here");
            if let Some(first) = place.spans.by_path.get(&path) {
                diag = diag.also(first.clone(), "first given here");
            }
            self.diagnostics
                .push(diag.hint("a field that is not repeated takes one value"));
            return;
        }
        if let Some(value) = value {
            *slot = Some(value);
        }
    }

    /// Records where a scalar field's value is; returns the scalar, or
    /// reports that the field needs a single value.
    fn single<'f, 't>(
        &mut self,
        f: &'f Field<'t>,
        place: &mut Place<'_>,
    ) -> Option<&'f Scalar<'t>> {
        match &f.value {
            Value::Scalar(scalar) => {
                let path = place.path(f.name);
                place
                    .spans
                    .by_path
                    .entry(path)
                    .or_insert_with(|| scalar.span.clone());
                Some(scalar)
            }
            Value::Message(_) => {
                self.wrong(f.span.clone(), f.name, "a value (`name: value`)", "a block");
                None
            }
            Value::List(_, span) => {
                self.wrong(span.clone(), f.name, "a single value", "a list");
                None
            }
        }
    }

    /// The values of a repeated scalar field (`dim: 1 dim: 3` or `dim: [1, 3]`),
    /// each recorded as `path[i]` (counting earlier occurrences).
    fn repeated<T>(
        &mut self,
        f: &Field<'_>,
        place: &mut Place<'_>,
        read: impl Fn(&mut Self, &Scalar<'_>, &str) -> Option<T>,
    ) -> Vec<(T, Span)> {
        let scalars: Vec<&Scalar<'_>> = match &f.value {
            Value::Scalar(scalar) => vec![scalar],
            Value::List(items, _) => items.iter().collect(),
            Value::Message(_) => {
                self.wrong(f.span.clone(), f.name, "a value (`name: value`)", "a block");
                return Vec::new();
            }
        };
        let path = place.path(f.name);
        let mut out = Vec::new();
        for scalar in scalars {
            let count = place.spans.counts.entry(path.clone()).or_insert(0);
            let idx = *count;
            *count += 1;
            let spans = &mut place.spans.by_path;
            spans.insert(format!("{path}[{idx}]"), scalar.span.clone());
            spans
                .entry(path.clone())
                .or_insert_with(|| scalar.span.clone());
            if let Some(value) = read(self, scalar, f.name) {
                out.push((value, scalar.span.clone()));
            }
        }
        out
    }

    fn body<'f, 't>(&mut self, f: &'f Field<'t>) -> Option<&'f [Field<'t>]> {
        match &f.value {
            Value::Message(fields) => Some(fields),
            Value::Scalar(Scalar { span, .. }) | Value::List(_, span) => {
                self.wrong(span.clone(), f.name, "a block (`name { ... }`)", "a value");
                None
            }
        }
    }

    /// Reads a singular message field, its fields' spans under its path.
    fn message<T>(
        &mut self,
        f: &Field<'_>,
        place: &mut Place<'_>,
        read: impl FnOnce(&mut Self, &[Field<'_>], &mut Place<'_>) -> T,
    ) -> Option<T> {
        let body = self.body(f)?;
        let path = place.path(f.name);
        place
            .spans
            .by_path
            .entry(path.clone())
            .or_insert_with(|| f.span.clone());
        let mut inner = Place {
            spans: place.spans,
            prefix: path,
        };
        Some(read(self, body, &mut inner))
    }

    /// Reads the `idx`-th entry of a repeated message field (`path[idx]`).
    fn indexed_message<T>(
        &mut self,
        f: &Field<'_>,
        place: &mut Place<'_>,
        idx: usize,
        read: impl FnOnce(&mut Self, &[Field<'_>], &mut Place<'_>) -> T,
    ) -> Option<T> {
        let body = self.body(f)?;
        let path = format!("{}[{idx}]", place.path(f.name));
        place.spans.by_path.insert(path.clone(), f.span.clone());
        let mut inner = Place {
            spans: place.spans,
            prefix: path,
        };
        Some(read(self, body, &mut inner))
    }

    fn wrong(&mut self, span: Span, name: &str, wanted: &str, found: &str) {
        self.diagnostics.push(
            Diagnostic::error(
                code::WRONG_TYPE,
                format!("`{name}` takes {wanted}, found {found}"),
            )
            .at(span, format!("{found} here")),
        );
    }

    fn string(&mut self, f: &Field<'_>, place: &mut Place<'_>) -> Option<String> {
        let scalar = self.single(f, place)?;
        self.scalar_string(scalar, f.name)
    }

    fn scalar_string(&mut self, scalar: &Scalar<'_>, name: &str) -> Option<String> {
        match &scalar.kind {
            ScalarKind::Str(text) => Some(text.clone()),
            _ => {
                self.diagnostics.push(
                    Diagnostic::error(
                        code::WRONG_TYPE,
                        format!("`{name}` must be a quoted string, found {}", scalar.text),
                    )
                    .at(scalar.span.clone(), "not a string")
                    .hint(format!("write `{name}: \"{}\"`", scalar.text)),
                );
                None
            }
        }
    }

    fn uint(&mut self, f: &Field<'_>, place: &mut Place<'_>, min: u32) -> Option<u32> {
        let scalar = self.single(f, place)?;
        self.scalar_int(scalar, f.name, min.into(), u32::MAX.into())
            .map(|v| v as u32)
    }

    fn int32(&mut self, f: &Field<'_>, place: &mut Place<'_>) -> Option<i32> {
        let scalar = self.single(f, place)?;
        self.scalar_int(scalar, f.name, i32::MIN.into(), i32::MAX.into())
            .map(|v| v as i32)
    }

    /// A whole number from `min` to `max`; the message says which.
    fn scalar_int(
        &mut self,
        scalar: &Scalar<'_>,
        name: &str,
        min: i128,
        max: i128,
    ) -> Option<i128> {
        let what = match (min, max) {
            (1, _) => "a positive whole number".to_string(),
            (0, _) => "a whole number, 0 or more".to_string(),
            _ => "a whole number".to_string(),
        };
        let text = scalar.text;
        let value = match scalar.kind {
            ScalarKind::Number => parse_int(text),
            _ => None,
        };
        let found = match &scalar.kind {
            ScalarKind::Str(_) => format!("the string {text}"),
            _ => text.to_string(),
        };
        match value {
            Some(v) if (min..=max).contains(&v) => Some(v),
            Some(v) if v > max => {
                self.diagnostics.push(
                    Diagnostic::error(
                        code::OUT_OF_RANGE,
                        format!("`{name}` is too large (at most {max}), found {text}"),
                    )
                    .at(scalar.span.clone(), "too large"),
                );
                None
            }
            Some(_) => {
                self.diagnostics.push(
                    Diagnostic::error(
                        code::OUT_OF_RANGE,
                        format!("`{name}` must be {what}, found {text}"),
                    )
                    .at(scalar.span.clone(), "out of range"),
                );
                None
            }
            None => {
                self.diagnostics.push(
                    Diagnostic::error(
                        code::WRONG_TYPE,
                        format!("`{name}` must be {what}, found {found}"),
                    )
                    .at(scalar.span.clone(), "not a whole number"),
                );
                None
            }
        }
    }

    fn float(&mut self, f: &Field<'_>, place: &mut Place<'_>) -> Option<f32> {
        let scalar = self.single(f, place)?;
        let text = scalar.text;
        let parsed = match scalar.kind {
            ScalarKind::Number => text.trim_end_matches(['f', 'F']).parse::<f64>().ok(),
            _ => None,
        };
        match parsed {
            Some(v) if (v as f32).is_finite() => Some(v as f32),
            Some(_) => {
                self.diagnostics.push(
                    Diagnostic::error(
                        code::OUT_OF_RANGE,
                        format!("`{}` is too large for a 32-bit float, found {text}", f.name),
                    )
                    .at(scalar.span.clone(), "too large"),
                );
                None
            }
            None => {
                self.diagnostics.push(
                    Diagnostic::error(
                        code::WRONG_TYPE,
                        format!("`{}` must be a number, found {text}", f.name),
                    )
                    .at(scalar.span.clone(), "not a number"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, f: &Field<'_>, place: &mut Place<'_>) -> Option<bool> {
        let scalar = self.single(f, place)?;
        match (&scalar.kind, scalar.text) {
            (ScalarKind::Ident, "true" | "True" | "t") | (ScalarKind::Number, "1") => Some(true),
            (ScalarKind::Ident, "false" | "False" | "f") | (ScalarKind::Number, "0") => Some(false),
            _ => {
                self.diagnostics.push(
                    Diagnostic::error(
                        code::WRONG_TYPE,
                        format!("`{}` must be true or false, found {}", f.name, scalar.text),
                    )
                    .at(scalar.span.clone(), "not true or false"),
                );
                None
            }
        }
    }

    /// An enumeration value by name (or number, as protobuf allows).
    fn enumeration(
        &mut self,
        f: &Field<'_>,
        place: &mut Place<'_>,
        names: &[(&str, i32)],
    ) -> Option<i32> {
        let scalar = self.single(f, place)?;
        let text = scalar.text;
        match scalar.kind {
            ScalarKind::Ident => {
                if let Some((_, number)) = names.iter().find(|(name, _)| *name == text) {
                    return Some(*number);
                }
            }
            ScalarKind::Number => {
                if let Some(v) = parse_int(text).and_then(|v| i32::try_from(v).ok()) {
                    return Some(v);
                }
            }
            ScalarKind::Str(_) => {}
        }
        let mut diag = Diagnostic::error(
            code::UNKNOWN_NAME,
            format!("unknown `{}` value {text}", f.name),
        )
        .at(scalar.span.clone(), "not a known value");
        let candidates: Vec<&str> = names
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !name.is_empty())
            .collect();
        if let Some(best) = closest(text.trim_matches(['"', '\'']), &candidates) {
            diag = diag.hint(format!("did you mean {best}?"));
        } else if candidates.len() <= 4 {
            diag = diag.hint(format!("one of {}", candidates.join(", ")));
        }
        self.diagnostics.push(diag);
        None
    }

    /// An issue of the lowering as a diagnostic at the span of its field
    /// (or of the nearest enclosing one, or of the layer).
    fn diagnose(&self, issue: &Issue, net: &proto::NetParameter) -> Diagnostic {
        let (spans, whole, layer_name) = match issue.layer {
            Some(idx) => {
                let list = if net.layer.is_empty() {
                    &self.v1_layers
                } else {
                    &self.v2_layers
                };
                let name = if net.layer.is_empty() {
                    net.layers.get(idx).and_then(|l| l.name.clone())
                } else {
                    net.layer.get(idx).and_then(|l| l.name.clone())
                };
                match list.get(idx) {
                    Some(layer) => (&layer.fields, Some(layer.whole.clone()), name),
                    None => (&self.net_spans, None, name),
                }
            }
            None => (&self.net_spans, None, None),
        };
        let mut path = issue.field.as_str();
        let span = loop {
            if let Some(span) = spans.by_path.get(path) {
                break Some(span.clone());
            }
            if let Some(stripped) = path
                .strip_suffix(']')
                .and_then(|p| p.rfind('[').map(|at| &p[..at]))
            {
                path = stripped;
                continue;
            }
            match path.rfind('.') {
                Some(at) => path = &path[..at],
                None => break None,
            }
        };
        let span = span.or(whole.clone()).unwrap_or(0..0);
        let label = if issue.field.is_empty() {
            "in this layer".to_string()
        } else {
            "here".to_string()
        };
        let mut diag = Diagnostic::error(issue.code, issue.message.clone()).at(span.clone(), label);
        if let (Some(whole), Some(name)) = (whole, layer_name) {
            if whole != span {
                let head = whole.start..whole.start + 1;
                diag = diag.also(head, format!("in layer `{name}`"));
            }
        }
        if let Some(hint) = &issue.hint {
            diag = diag.hint(hint.clone());
        }
        diag
    }
}

/// A whole number in protobuf's text syntax (decimal, or `0x` hex).
fn parse_int(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let value = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i128::from_str_radix(hex, 16).ok()?
    } else if digits.bytes().all(|b| b.is_ascii_digit()) && !digits.is_empty() {
        // Long runs of digits saturate; the range check reports them.
        digits.parse::<i128>().unwrap_or(i128::MAX)
    } else {
        return None;
    };
    Some(if negative { -value } else { value })
}

/// The candidate closest to `word`, if close enough to be a typo.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let upper = word.to_ascii_uppercase();
    candidates
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(&upper, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 3))
        .min()
        .map(|(_, candidate)| candidate)
}
