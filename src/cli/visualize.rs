//! `allcnnc visualize`: what a unit of a trained model responds to
//! (Springenberg et al. 2015, Section 3.4, Figures 3-6), as one labelled PNG.
//!
//! Three modes:
//! - top patches (`--data`): for each unit (channel) the `--top` test images
//!   whose largest activation in that channel is highest; a row per unit
//!   shows their receptive-field patches, then the reconstructions of that
//!   one activation (every other activation of the layer set to zero,
//!   propagated back with the chosen rule), cropped to the same patch;
//! - one image (`--image FILE` or `--index N` of the test split): the
//!   largest activation of the layer (or of each `--units` channel), shown
//!   on the image with its receptive field boxed, reconstructed over the
//!   whole image with backprop, deconvnet and guided backpropagation;
//! - no image (`--no-image`, or no `--data`): the unit at the centre of the
//!   layer's map, reconstructed without conditioning on an image. The
//!   backward pass needs a forward pass (ReLU inputs, max-pool switches), so
//!   it runs on the all-zero input of the model, i.e. the training mean under
//!   `preprocess normalize`; the kept unit is set to 1. Deconvnet ignores the
//!   ReLU inputs, so its picture depends on that input only through the
//!   max-pool switches (all inputs equal: the first element of each window
//!   wins); backprop and guided are gated by the ReLUs that the zero input
//!   opens (those with a positive bias-driven pre-activation), and are all
//!   zero when the unit itself is closed on it.
//!
//! Pixels follow [`crate::vis::display`]: patches as read (before
//! preprocessing), reconstructions divided by their largest absolute value
//! and mapped to `128 + 127 x` (grey is zero).

use super::args::{load_trained, DeviceArg};
use super::flags;
use super::{CliResult, Failure};
use crate::vis::display::{image_tile, max_abs, signal_tile, MIN_SIDE_ONE_IMAGE_PX, MIN_SIDE_PX};
use crate::vis::field::{receptive_fields, ReceptiveField, Window};
use crate::vis::figure::{render, Cell, Grid, Group, Row};
use crate::vis::search::{reconstruct, Hit, Search, SeedValue, Unit};
use crate::vis::{rule_name, rule_title, RULES};
use clap::{Args, ValueEnum};
use runtime::backend::Executor;
use runtime::data::{self, Dataset, Split};
use runtime::plan::{Op, Plan, ReluRule, Shape};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The backward rule(s) to draw.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    Guided,
    Deconvnet,
    Backprop,
    /// Backprop, deconvnet and guided, side by side.
    All,
}

impl Method {
    fn rules(self) -> Vec<ReluRule> {
        match self {
            Method::Guided => vec![ReluRule::Guided],
            Method::Deconvnet => vec![ReluRule::Deconvnet],
            Method::Backprop => vec![ReluRule::Backprop],
            Method::All => RULES.to_vec(),
        }
    }
}

#[derive(Args)]
pub struct VisualizeArgs {
    /// The model
    pub file: PathBuf,
    /// Checkpoint (best.safetensors or checkpoint.safetensors of a run)
    #[arg(long)]
    pub weights: PathBuf,
    /// Data set folder or archive; its test split is searched for the top-activating images
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Layer name, as `allcnnc summary` prints it (conv3, pool1, ...)
    #[arg(long)]
    pub layer: String,
    /// Channels to show, e.g. 0,3,5 (default: the first 8)
    #[arg(long, value_delimiter = ',')]
    pub units: Vec<usize>,
    /// Images per unit
    #[arg(long, default_value_t = 6, value_parser = flags::count::<usize>)]
    pub top: usize,
    /// Backward rule; default guided for top patches, all for --image, --index and --no-image
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// One image file (PNG or JPEG): its largest activation, reconstructed with every rule
    #[arg(long, conflicts_with_all = ["index", "no_image"])]
    pub image: Option<PathBuf>,
    /// Like --image, for image N of the test split of --data
    #[arg(long, requires = "data", conflicts_with = "no_image")]
    pub index: Option<usize>,
    /// Search only the first N test images
    #[arg(long, default_value_t = 2000, value_parser = flags::count::<usize>)]
    pub limit: usize,
    /// Reconstruct the unit at the centre of the map without an input image
    #[arg(long)]
    pub no_image: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,
    /// Images per forward pass of the search
    #[arg(long, default_value_t = 100, value_parser = flags::count::<usize>)]
    pub batch: usize,
    /// The figure (PNG)
    #[arg(long)]
    pub out: PathBuf,
    /// Print units, image indices, activations and positions as JSON
    #[arg(long)]
    pub json: bool,
}

/// What every mode shares: the model on its device and the layer.
struct Model {
    plan: Plan,
    exec: Box<dyn Executor>,
    checkpoint: runtime::train::checkpoint::Checkpoint,
    layer_idx: usize,
    field: ReceptiveField,
    out_shape: Shape,
    channels: Vec<usize>,
}

impl Model {
    fn load(args: &VisualizeArgs) -> Result<Self, Failure> {
        let (model, exec, checkpoint) = load_trained(
            &args.file,
            &args.weights,
            args.device,
            crate::back::cuda::Precision::Fp32,
        )?;
        let fields = receptive_fields(&model.graph)
            .ok_or_else(|| "internal: the stats pass did not run".to_string())?;
        let plan = model.plan;
        let names = || {
            plan.layers
                .iter()
                .filter(|l| !matches!(l.op, Op::Softmax))
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let layer_idx = plan
            .layers
            .iter()
            .position(|l| l.name == args.layer && !matches!(l.op, Op::Softmax))
            .ok_or_else(|| {
                format!(
                    "model `{}` has no layer `{}` to visualise; layers: {}",
                    plan.name,
                    args.layer,
                    names()
                )
            })?;
        let out_shape = plan.layers[layer_idx].out_shape;
        let channels = if args.units.is_empty() {
            (0..out_shape.c.min(8)).collect()
        } else {
            args.units.clone()
        };
        if let Some(bad) = channels.iter().find(|&&c| c >= out_shape.c) {
            return Err(format!(
                "--units: layer `{}` has {} channels (0..{}), not {bad}",
                args.layer,
                out_shape.c,
                out_shape.c - 1
            )
            .into());
        }
        Ok(Self {
            field: fields[layer_idx],
            plan,
            exec,
            checkpoint,
            layer_idx,
            out_shape,
            channels,
        })
    }

    fn layer_name(&self) -> &str {
        &self.plan.layers[self.layer_idx].name
    }

    /// The first title line: model, layer, receptive field.
    fn title(&self) -> String {
        format!(
            "{}  layer {} ({})  receptive field {}x{}, jump {}",
            self.plan.name,
            self.layer_name(),
            self.out_shape,
            self.field.size,
            self.field.size,
            self.field.jump
        )
    }

    /// The JSON fields every mode shares.
    fn json_head(
        &self,
        mode: &str,
        rules: &[ReluRule],
        out: &Path,
    ) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        map.insert("model".into(), json!(self.plan.name));
        map.insert("layer".into(), json!(self.layer_name()));
        map.insert("layer_index".into(), json!(self.layer_idx));
        map.insert("layer_shape".into(), json!(self.out_shape.to_string()));
        map.insert("receptive_field".into(), json!(self.field));
        map.insert("mode".into(), json!(mode));
        map.insert(
            "methods".into(),
            json!(rules.iter().map(|&r| rule_name(r)).collect::<Vec<_>>()),
        );
        map.insert("figure".into(), json!(out.display().to_string()));
        map
    }

    fn preprocess(&self, images: &mut [f32], n: usize) -> Result<(), Failure> {
        if let Some(preprocess) = &self.checkpoint.preprocess {
            preprocess.apply(images, n).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

pub fn visualize(args: &VisualizeArgs) -> CliResult {
    let mut model = Model::load(args)?;
    let single = args.image.is_some() || args.index.is_some();
    let no_image = args.no_image || (args.data.is_none() && !single);
    let default_method = if single || no_image {
        Method::All
    } else {
        Method::Guided
    };
    let rules = args.method.unwrap_or(default_method).rules();
    let (grid, json) = if no_image {
        without_image(&mut model, &rules, args)?
    } else if single {
        one_image(&mut model, &rules, args)?
    } else {
        top_patches(&mut model, &rules, args)?
    };
    if !runtime::draw::font_available() {
        eprintln!(
            "warning: no DejaVu Sans font found (Debian: fonts-dejavu-core); the figure has no labels"
        );
    }
    let canvas = render(&grid);
    canvas.save_png(&args.out)?;
    eprintln!(
        "wrote {} ({}x{} px)",
        args.out.display(),
        canvas.width,
        canvas.height
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json).expect("json"));
    }
    Ok(())
}

/// The test split of `path` (first `limit` images), made to fit the
/// model's input (grey images repeated on a colour model's channels) and
/// checked against it and the class names of its checkpoint at `weights`.
fn load_test(
    path: &Path,
    limit: Option<usize>,
    model: &Model,
    weights: &Path,
) -> Result<Dataset, Failure> {
    let plan = &model.plan;
    let mut test = data::load_limited(path, Split::Test, limit)
        .map_err(|err| Failure::Message(err.to_string()))?;
    test.to_channels(plan.input.c);
    model
        .checkpoint
        .check_class_names(weights, path, &test.class_names)
        .map_err(|err| Failure::Message(err.to_string()))?;
    if test.shape != plan.input {
        return Err(format!(
            "data set {} has images of {} (CxHxW) but model `{}` expects {}",
            path.display(),
            test.shape,
            plan.name,
            plan.input
        )
        .into());
    }
    if test.is_empty() {
        return Err(format!("data set {} has no test images", path.display()).into());
    }
    Ok(test)
}

fn headers(first: Option<(&str, usize)>, rules: &[ReluRule], columns: usize) -> Vec<Group> {
    first
        .map(|(header, columns)| Group {
            header: header.to_string(),
            columns,
        })
        .into_iter()
        .chain(rules.iter().map(|&rule| Group {
            header: rule_title(rule).to_string(),
            columns,
        }))
        .collect()
}

/// Figure 3: per unit, the top patches and their reconstructions.
fn top_patches(
    model: &mut Model,
    rules: &[ReluRule],
    args: &VisualizeArgs,
) -> Result<(Grid, Value), Failure> {
    let data_path = args.data.as_deref().expect("top patches need --data");
    check_figure(model, rules, args.top)?;
    let raw = load_test(data_path, Some(args.limit), model, &args.weights)?;
    let mut images = raw.images.clone();
    model.preprocess(&mut images, raw.len())?;
    let input = model.plan.input;
    let started = Instant::now();
    let search = Search {
        layer_idx: model.layer_idx,
        channels: &model.channels,
        top: args.top,
        batch: args.batch,
    };
    let hits = search
        .run(model.exec.as_mut(), &images, raw.len(), |_| {})
        .map_err(|e| e.to_string())?;
    eprintln!(
        "searched {} test images of {} for layer {} in {:.1}s on {}",
        raw.len(),
        data_path.display(),
        model.layer_name(),
        started.elapsed().as_secs_f64(),
        model.exec.device_name()
    );
    let mut rows = Vec::new();
    let mut units_json = Vec::new();
    for (&channel, hits) in model.channels.iter().zip(&hits) {
        let mut batch = Vec::with_capacity(hits.len() * input.len());
        for hit in hits {
            batch
                .extend_from_slice(&images[hit.image * input.len()..(hit.image + 1) * input.len()]);
        }
        let units: Vec<Unit> = hits
            .iter()
            .map(|h| Unit {
                channel,
                y: h.y,
                x: h.x,
            })
            .collect();
        let recons = reconstruct(
            model.exec.as_mut(),
            model.layer_idx,
            &batch,
            &units,
            rules,
            SeedValue::Activation,
        )
        .map_err(|e| e.to_string())?;
        let windows: Vec<Window> = hits.iter().map(|h| model.field.window(h.y, h.x)).collect();
        let mut cells: Vec<Cell> = hits
            .iter()
            .zip(&windows)
            .map(|(hit, &window)| Cell {
                tile: image_tile(raw.image(hit.image), input, Some(window)),
                caption: vec![format!("#{}", hit.image), format!("{:.2}", hit.activation)],
            })
            .collect();
        for per_rule in &recons {
            cells.extend(per_rule.iter().zip(&windows).map(|(recon, &window)| Cell {
                tile: signal_tile(recon, input, Some(window)),
                caption: Vec::new(),
            }));
        }
        let best = hits.first().map_or(0.0, |h| h.activation);
        rows.push(Row {
            label: vec![format!("unit {channel}"), format!("max {best:.2}")],
            cells,
        });
        units_json.push(json!({
            "channel": channel,
            "hits": hits.iter().zip(&windows).map(|(hit, window)| hit_json(hit, window, &raw, input)).collect::<Vec<_>>(),
            "reconstruction_max_abs": rules.iter().zip(&recons).map(|(&rule, per_rule)| {
                (rule_name(rule).to_string(), json!(per_rule.iter().map(|r| max_abs(r)).collect::<Vec<_>>()))
            }).collect::<serde_json::Map<_, _>>(),
        }));
    }
    let top = hits.iter().map(Vec::len).max().unwrap_or(0);
    let grid = Grid {
        min_side_px: MIN_SIDE_PX,
        title: vec![
            model.title(),
            format!(
                "Top {top} of {} test images per unit: patches (#image, activation), then reconstructions of that activation",
                raw.len()
            ),
        ],
        groups: headers(Some(("Image patches", top)), rules, top),
        rows,
    };
    let mut json = model.json_head("top", rules, &args.out);
    json.insert("images_searched".into(), json!(raw.len()));
    json.insert("units".into(), json!(units_json));
    Ok((grid, Value::Object(json)))
}

/// Refuses a `--top` whose figure could not fit the memory budget, before
/// any image is read: a row per unit of `top` patches and `top`
/// reconstructions per rule, each tile at least [`MIN_SIDE_PX`] square (RGB)
/// plus its gap, is a lower bound of the canvas `render` allocates.
fn check_figure(model: &Model, rules: &[ReluRule], top: usize) -> Result<(), Failure> {
    let side = MIN_SIDE_PX as u128;
    let columns = runtime::budget::product(&[top as u128, rules.len() as u128 + 1]);
    let width = runtime::budget::product(&[columns, side + 3]);
    let height = runtime::budget::product(&[model.channels.len() as u128, side + 10]);
    runtime::budget::check(
        format_args!(
            "--top {top} (a figure of {} units x {columns} tiles of at least {side}x{side} pixels)",
            model.channels.len()
        ),
        runtime::budget::product(&[width, height, 3]),
    )
    .map_err(|err| Failure::Message(err.to_string()))
}

fn hit_json(hit: &Hit, window: &Window, data: &Dataset, input: Shape) -> Value {
    let label = data.labels[hit.image] as usize;
    json!({
        "image": hit.image,
        "label": label,
        "class": data.class_names.get(label),
        "activation": hit.activation,
        "y": hit.y,
        "x": hit.x,
        "window": window,
        "clipped": window.clip(input),
    })
}

/// Figures 4-6: one image, its largest activation(s), every rule over the
/// whole image.
fn one_image(
    model: &mut Model,
    rules: &[ReluRule],
    args: &VisualizeArgs,
) -> Result<(Grid, Value), Failure> {
    let input = model.plan.input;
    let (raw, what) = match (&args.image, args.index) {
        (Some(path), _) => {
            let (shape, image) =
                data::folder::load_image_as(path, input.c).map_err(|e| e.to_string())?;
            if shape != input {
                return Err(format!(
                    "image {} is {shape} (CxHxW) but model `{}` expects {input}",
                    path.display(),
                    model.plan.name
                )
                .into());
            }
            (image, format!("image {}", path.display()))
        }
        (None, Some(index)) => {
            let data_path = args.data.as_deref().expect("clap: --index requires --data");
            // `usize::MAX` reads the whole split, then is out of range.
            let test = load_test(data_path, index.checked_add(1), model, &args.weights)?;
            if index >= test.len() {
                return Err(format!(
                    "--index {index}: the test split of {} has {} images",
                    data_path.display(),
                    test.len()
                )
                .into());
            }
            let label = test.labels[index] as usize;
            let class = test.class_names.get(label).cloned().unwrap_or_default();
            (
                test.image(index).to_vec(),
                format!("test image {index} ({class})"),
            )
        }
        (None, None) => unreachable!("one_image needs --image or --index"),
    };
    let mut image = raw.clone();
    model.preprocess(&mut image, 1)?;
    let acts = model
        .exec
        .forward_to(&image, 1, model.layer_idx)
        .map_err(|e| e.to_string())?;
    let maxima = crate::vis::search::channel_maxima(&acts, model.out_shape);
    // Without --units: the single largest activation of the layer.
    let channels: Vec<usize> = if args.units.is_empty() {
        let best = (0..model.out_shape.c)
            .max_by(|&a, &b| maxima[a].0.total_cmp(&maxima[b].0).then(b.cmp(&a)))
            .unwrap_or(0);
        vec![best]
    } else {
        model.channels.clone()
    };
    let mut rows = Vec::new();
    let mut units_json = Vec::new();
    for &channel in &channels {
        let (activation, y, x) = maxima[channel];
        let unit = Unit { channel, y, x };
        let recons = reconstruct(
            model.exec.as_mut(),
            model.layer_idx,
            &image,
            &[unit],
            rules,
            SeedValue::Activation,
        )
        .map_err(|e| e.to_string())?;
        let window = model.field.window(y, x);
        let mut tile = image_tile(&raw, input, None);
        let clipped = window.clip(input);
        if !clipped.is_empty() {
            tile.boxes.push(clipped);
        }
        let mut cells = vec![Cell {
            tile,
            caption: Vec::new(),
        }];
        cells.extend(recons.iter().map(|per_rule| Cell {
            tile: signal_tile(&per_rule[0], input, None),
            caption: Vec::new(),
        }));
        rows.push(Row {
            label: vec![
                format!("unit {channel}"),
                format!("at {y},{x}"),
                format!("act {activation:.2}"),
            ],
            cells,
        });
        units_json.push(json!({
            "channel": channel, "y": y, "x": x, "activation": activation,
            "window": window, "clipped": clipped,
            "reconstruction_max_abs": rules.iter().zip(&recons).map(|(&rule, r)| {
                (rule_name(rule).to_string(), json!(max_abs(&r[0])))
            }).collect::<serde_json::Map<_, _>>(),
        }));
    }
    let grid = Grid {
        min_side_px: MIN_SIDE_ONE_IMAGE_PX,
        title: vec![
            model.title(),
            format!("{what}: largest activation (red box: its receptive field), reconstructed over the image"),
        ],
        groups: headers(Some(("Image", 1)), rules, 1),
        rows,
    };
    let mut json = model.json_head("image", rules, &args.out);
    json.insert("image".into(), json!(what));
    json.insert("units".into(), json!(units_json));
    Ok((grid, Value::Object(json)))
}

/// Reconstructions not conditioned on an image (see the module doc).
fn without_image(
    model: &mut Model,
    rules: &[ReluRule],
    args: &VisualizeArgs,
) -> Result<(Grid, Value), Failure> {
    let input = model.plan.input;
    let zero = vec![0.0f32; input.len()];
    let (y, x) = (model.out_shape.h / 2, model.out_shape.w / 2);
    let acts = model
        .exec
        .forward_to(&zero, 1, model.layer_idx)
        .map_err(|e| e.to_string())?;
    let units: Vec<Unit> = model
        .channels
        .iter()
        .map(|&channel| Unit { channel, y, x })
        .collect();
    // One forward pass per unit: the executor takes one unit per image, so
    // the zero image is repeated.
    let images: Vec<f32> = (0..units.len())
        .flat_map(|_| zero.iter().copied())
        .collect();
    let recons = reconstruct(
        model.exec.as_mut(),
        model.layer_idx,
        &images,
        &units,
        rules,
        SeedValue::One,
    )
    .map_err(|e| e.to_string())?;
    let window = model.field.window(y, x);
    let c = model.out_shape.c;
    let mut rows = Vec::new();
    let mut units_json = Vec::new();
    for (u, unit) in units.iter().enumerate() {
        let activation = acts[(y * model.out_shape.w + x) * c + unit.channel];
        let cells = recons
            .iter()
            .map(|per_rule| {
                let recon = &per_rule[u];
                Cell {
                    tile: signal_tile(recon, input, Some(window)),
                    caption: if max_abs(recon) == 0.0 {
                        vec!["all zero".into()]
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        rows.push(Row {
            label: vec![
                format!("unit {}", unit.channel),
                format!("act0 {activation:.2}"),
            ],
            cells,
        });
        units_json.push(json!({
            "channel": unit.channel, "y": y, "x": x,
            "activation_on_zero_input": activation,
            "window": window, "clipped": window.clip(input),
            "reconstruction_max_abs": rules.iter().zip(&recons).map(|(&rule, r)| {
                (rule_name(rule).to_string(), json!(max_abs(&r[u])))
            }).collect::<serde_json::Map<_, _>>(),
        }));
    }
    let grid = Grid {
        min_side_px: MIN_SIDE_PX,
        title: vec![
            model.title(),
            format!(
                "No input image: unit at the centre ({y},{x}) set to 1, backward pass on the all-zero (mean) input"
            ),
            "act0: the unit's activation on that input".to_string(),
        ],
        groups: headers(None, rules, 1),
        rows,
    };
    let mut json = model.json_head("no_image", rules, &args.out);
    json.insert("units".into(), json!(units_json));
    Ok((grid, Value::Object(json)))
}
