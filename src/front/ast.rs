//! The syntax tree of a `.net` file, as written (before constants, blocks and
//! repeats are expanded). Every node carries the byte range it came from.

use std::ops::Range;

/// A byte range of the source file.
pub type Span = Range<usize>;

/// A name with its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Number(f64),
    Name(String),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call(Ident, Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    Expr(Expr),
    /// `3x32x32`.
    Dims(Vec<u64>),
    /// `200, 250, 300`.
    List(Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

/// An argument of a layer statement: positional or `key=value`.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Positional(Value),
    Named(Ident, Value),
}

impl Arg {
    pub fn span(&self) -> Span {
        match self {
            Arg::Positional(value) => value.span.clone(),
            Arg::Named(key, value) => key.span.start..value.span.end,
        }
    }
}

/// `name: kind args...`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStmt {
    pub label: Option<Ident>,
    pub kind: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Layer(LayerStmt),
    Const(ConstDef),
    Use {
        block: Ident,
        args: Vec<Expr>,
        span: Span,
    },
    Repeat {
        var: Option<Ident>,
        /// `repeat N` counts 1..=N; `repeat i in A..B` counts A..=B.
        from: Option<Expr>,
        to: Expr,
        body: Vec<Stmt>,
        span: Span,
    },
    /// A line the grammar did not recognise; reported by the checker.
    Bad(Span),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConstDef {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Ident>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkDef {
    pub name: Ident,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainDef {
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Const(ConstDef),
    Block(BlockDef),
    Network(NetworkDef),
    Train(TrainDef),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
}
