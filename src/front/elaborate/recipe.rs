//! The training recipe: the `train` section's settings (optimizer, learning
//! rate and its schedule, epochs, batch, weight decay, preprocessing,
//! augmentation, warmup, initialisation), one method per setting, each
//! filling its fields of [`Training`] and naming the options it accepts.

use super::args::Args;
use super::hints::nearest;
use super::values::keyword;
use super::{stmt_span, Elaborator};
use crate::diagnostic::Diagnostic;
use crate::front::ast::*;
use crate::ir::training::{ranges, Init, Preprocess, Schedule};
use crate::ir::Training;
use std::collections::HashMap;

const TRAIN_KINDS: &[&str] = &[
    "optimizer",
    "lr",
    "schedule",
    "epochs",
    "batch",
    "weight_decay",
    "preprocess",
    "augment",
    "warmup",
    "init",
];

/// The options a setting accepts by name, as each setting method returns them.
type Allowed = &'static [&'static str];

impl Elaborator {
    /// Reads the `train` section; settings not given keep their defaults.
    pub(super) fn training(&mut self, def: &TrainDef) -> Training {
        let mut training = Training::default();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for stmt in &def.body {
            let Stmt::Layer(stmt) = stmt else {
                self.not_a_setting(stmt, def);
                continue;
            };
            let kind = stmt.kind.name.as_str();
            if let Some(prev) = seen.get(kind) {
                self.diags.push(
                    Diagnostic::error("E0216", format!("`{kind}` is given twice"))
                        .at(stmt.span.clone(), "second")
                        .also(prev.clone(), "first"),
                );
            }
            let mut args = Args::new(stmt);
            // An unknown setting is reported alone: its options mean nothing,
            // and it does not count as given.
            let Some(allowed) = self.setting(stmt, &mut args, &mut training) else {
                continue;
            };
            seen.insert(kind, stmt.span.clone());
            args.finish(allowed, &mut self.diags);
        }
        training
    }

    /// A statement of the `train` section that is not a setting: constants
    /// are defined, anything else is reported (unless the parser already did).
    fn not_a_setting(&mut self, stmt: &Stmt, def: &TrainDef) {
        if let Stmt::Const(constant) = stmt {
            self.define(constant);
        } else if !matches!(stmt, Stmt::Bad(_)) {
            self.diags.push(
                Diagnostic::error("E0221", "only settings may appear in `train`")
                    .at(stmt_span(stmt), "not a setting")
                    .also(def.span.start..def.span.start + 5, "in this section")
                    .note(format!("settings: {}", TRAIN_KINDS.join(", "))),
            );
        }
    }

    /// Applies one setting; `None` (reported) for an unknown setting.
    fn setting(
        &mut self,
        stmt: &LayerStmt,
        args: &mut Args<'_>,
        training: &mut Training,
    ) -> Option<Allowed> {
        Some(match stmt.kind.name.as_str() {
            "optimizer" => self.optimizer(stmt, args, training),
            "lr" => self.learning_rate(args, training),
            "schedule" => self.schedule(stmt, args, training),
            kind @ ("epochs" | "batch" | "warmup") => self.count(kind, args, training),
            "weight_decay" => self.weight_decay(args, training),
            "preprocess" => self.preprocess(stmt, args, training),
            "init" => self.init(stmt, args, training),
            "augment" => self.augment(args, training),
            _ => {
                self.unknown_setting(stmt);
                return None;
            }
        })
    }

    fn unknown_setting(&mut self, stmt: &LayerStmt) {
        let kind = stmt.kind.name.as_str();
        let mut diag = Diagnostic::error("E0202", format!("unknown training setting `{kind}`"))
            .at(stmt.kind.span.clone(), "not a setting");
        if let Some(best) = nearest(kind, TRAIN_KINDS.iter().copied()) {
            diag = diag.hint(format!("did you mean `{best}`?"));
        }
        self.diags
            .push(diag.note(format!("settings: {}", TRAIN_KINDS.join(", "))));
    }

    /// `optimizer sgd [momentum=M] [nesterov=BOOL]`: SGD is the only one.
    fn optimizer(
        &mut self,
        stmt: &LayerStmt,
        args: &mut Args<'_>,
        training: &mut Training,
    ) -> Allowed {
        match args.take("kind", &[], Some(0)).and_then(keyword).as_deref() {
            Some("sgd") | None => {}
            Some(other) => self.diags.push(
                Diagnostic::error("E0220", format!("unknown optimizer `{other}`"))
                    .at(stmt.span.clone(), "here")
                    .note(
                        "the paper's optimizer is SGD with momentum: `optimizer sgd momentum=0.9`",
                    ),
            ),
        }
        if let Some(momentum) = args.take("momentum", &[], None).and_then(|v| self.float(v)) {
            if (0.0..1.0).contains(&momentum) {
                training.momentum = momentum;
            } else {
                self.range_error(args.span_of("momentum", None), "momentum", "0 to below 1");
            }
        }
        if let Some(value) = args.take("nesterov", &[], None) {
            training.nesterov = self.boolean(value).unwrap_or(false);
        }
        &["kind", "momentum", "nesterov"]
    }

    /// `lr VALUE`, above 0 and below 100.
    fn learning_rate(&mut self, args: &mut Args<'_>, training: &mut Training) -> Allowed {
        if let Some(lr) = args.take("value", &[], Some(0)).and_then(|v| self.float(v)) {
            if ranges::learning_rate(lr) {
                training.lr = lr;
            } else {
                self.range_error(
                    args.span_of("value", Some(0)),
                    "learning rate",
                    ranges::LEARNING_RATE,
                );
            }
        }
        &["value"]
    }

    /// `schedule step at=E1,E2,... [gamma=G]`, `schedule cosine` or
    /// `schedule constant`; an unknown kind falls back to constant.
    fn schedule(
        &mut self,
        stmt: &LayerStmt,
        args: &mut Args<'_>,
        training: &mut Training,
    ) -> Allowed {
        let which = args.take("kind", &[], Some(0)).and_then(keyword);
        let mut gamma = 0.1;
        if let Some(g) = args.take("gamma", &[], None).and_then(|v| self.float(v)) {
            if ranges::gamma(g) {
                gamma = g;
            } else {
                self.range_error(args.span_of("gamma", None), "gamma", ranges::GAMMA);
            }
        }
        let at = args.take("at", &["milestones"], None).cloned();
        training.schedule = match which.as_deref() {
            Some("step") => {
                let milestones = self.milestones(stmt, at.as_ref());
                Schedule::Step { gamma, milestones }
            }
            Some("cosine") => Schedule::Cosine,
            Some("constant") => Schedule::Constant,
            _ => {
                let span = args.span_of("kind", Some(0)).unwrap_or(stmt.span.clone());
                self.diags.push(
                    Diagnostic::error("E0220", "unknown schedule")
                        .at(span, "expected `step`, `cosine` or `constant`"),
                );
                Schedule::Constant
            }
        };
        &["kind", "gamma", "at", "milestones"]
    }

    /// A step schedule's epochs, which must increase; missing, none.
    fn milestones(&mut self, stmt: &LayerStmt, at: Option<&Value>) -> Vec<u32> {
        let Some(value) = at else {
            self.missing(stmt, "its epochs", "schedule step at=200,250,300 gamma=0.1");
            return Vec::new();
        };
        let milestones = self.int_list(value);
        if milestones.windows(2).any(|w| w[0] >= w[1]) {
            self.diags.push(
                Diagnostic::error("E0305", "schedule epochs must increase")
                    .at(value.span.clone(), "not in increasing order"),
            );
        }
        milestones
    }

    /// `epochs N`, `batch N` (both at least 1) or `warmup N`, capped at
    /// `u32::MAX`.
    fn count(&mut self, kind: &str, args: &mut Args<'_>, training: &mut Training) -> Allowed {
        if let Some(value) = args.take("value", &[], Some(0)) {
            if let Some(n) = self.integer(value) {
                let n = n.min(u32::MAX as u64) as u32;
                match kind {
                    "epochs" if n >= 1 => training.epochs = n,
                    "batch" if n >= 1 => training.batch = n,
                    "warmup" => training.warmup = n,
                    _ => self.range_error(Some(value.span.clone()), kind, ranges::COUNT),
                }
            }
        }
        &["value"]
    }

    /// `weight_decay VALUE`, 0 to below 1.
    fn weight_decay(&mut self, args: &mut Args<'_>, training: &mut Training) -> Allowed {
        if let Some(decay) = args.take("value", &[], Some(0)).and_then(|v| self.float(v)) {
            if (0.0..1.0).contains(&decay) {
                training.weight_decay = decay;
            } else {
                self.range_error(
                    args.span_of("value", Some(0)),
                    "weight decay",
                    "0 to below 1",
                );
            }
        }
        &["value"]
    }

    /// `preprocess none|normalize|gcn_zca`; a bad method leaves none.
    fn preprocess(
        &mut self,
        stmt: &LayerStmt,
        args: &mut Args<'_>,
        training: &mut Training,
    ) -> Allowed {
        let value = args.take("kind", &[], Some(0));
        training.preprocess = match value.and_then(keyword).as_deref() {
            Some("none") => Preprocess::None,
            Some("normalize") => Preprocess::Normalize,
            Some("gcn_zca") => Preprocess::GcnZca,
            _ => {
                match value {
                    Some(v) => self.bad_keyword(v, "preprocess", &["none", "normalize", "gcn_zca"]),
                    None => self.missing(stmt, "a method", "preprocess gcn_zca"),
                }
                Preprocess::None
            }
        };
        &["kind"]
    }

    /// `init he|lsuv`; a bad method keeps the default.
    fn init(&mut self, stmt: &LayerStmt, args: &mut Args<'_>, training: &mut Training) -> Allowed {
        let value = args.take("kind", &[], Some(0));
        match value.and_then(keyword).as_deref() {
            Some("he") => training.init = Init::He,
            Some("lsuv") => training.init = Init::Lsuv,
            _ => match value {
                Some(v) => self.bad_keyword(v, "init", &["he", "lsuv"]),
                None => self.missing(stmt, "a method", "init lsuv"),
            },
        }
        &["kind"]
    }

    /// `augment [flip] [none] [translate=N] [flip=BOOL]`; translation is
    /// capped at 64 pixels.
    fn augment(&mut self, args: &mut Args<'_>, training: &mut Training) -> Allowed {
        for position in 0..args.positional.len() {
            let Some(value) = args.take_positional(position) else {
                continue;
            };
            match keyword(value).as_deref() {
                Some("flip") => training.flip = true,
                Some("none") => {}
                _ => self.bad_keyword(value, "augment", &["flip", "translate=N", "none"]),
            }
        }
        if let Some(value) = args.take("translate", &[], None) {
            if let Some(n) = self.integer(value) {
                training.translate = n.min(64) as u32;
            }
        }
        if let Some(value) = args.take("flip", &[], None) {
            training.flip = self.boolean(value).unwrap_or(false);
        }
        &["translate", "flip"]
    }

    /// A list of whole epochs (`200,250,300`, or a single number).
    fn int_list(&mut self, value: &Value) -> Vec<u32> {
        let exprs: Vec<Expr> = match &value.kind {
            ValueKind::List(items) => items.clone(),
            ValueKind::Expr(expr) => vec![expr.clone()],
            ValueKind::Dims(_) => {
                self.diags.push(
                    Diagnostic::error("E0219", "expected a list of epochs like `200,250,300`")
                        .at(value.span.clone(), "not a list"),
                );
                return Vec::new();
            }
        };
        exprs
            .iter()
            .filter_map(|expr| {
                let v = self.eval(expr);
                self.int(expr.span.clone(), v, "an epoch").map(|n| n as u32)
            })
            .collect()
    }

    fn range_error(&mut self, span: Option<Span>, what: &str, range: &str) {
        self.diags.push(
            Diagnostic::error("E0301", format!("{what} is out of range"))
                .at(span.unwrap_or(0..0), format!("must be {range}")),
        );
    }
}
