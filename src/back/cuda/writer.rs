//! Rendering a [`Module`] as CUDA C.
//!
//! A [`Writer`] over any [`fmt::Write`] with one `put_*` method per kind of
//! item and an indent level; the generic device code is the fixed prelude
//! (`prelude.cu`, kept as a CUDA file so editors and reviewers read it as
//! CUDA). Output is deterministic: items are written in the module's order
//! and every number was formatted when the module was built.

use super::{Constants, Item, KernelDef, Module};
use std::fmt::{self, Write};

/// The generic templates and module-wide kernels every module starts with.
pub const PRELUDE: &str = include_str!("prelude.cu");

/// Renders a module to a string.
pub fn render(module: &Module) -> String {
    let mut writer = Writer::new(String::new());
    // Writing into a String cannot fail.
    let _ = writer.put_module(module);
    writer.into_inner()
}

/// CUDA C text with an indent level.
pub struct Writer<W: Write> {
    out: W,
    indent: usize,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self { out, indent: 0 }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn line(&mut self, args: fmt::Arguments<'_>) -> fmt::Result {
        for _ in 0..self.indent {
            self.out.write_str("    ")?;
        }
        self.out.write_fmt(args)?;
        self.out.write_char('\n')
    }

    fn blank(&mut self) -> fmt::Result {
        self.out.write_char('\n')
    }

    fn put_comment(&mut self, lines: &[String]) -> fmt::Result {
        for text in lines {
            self.line(format_args!("// {text}"))?;
        }
        Ok(())
    }

    pub fn put_module(&mut self, module: &Module) -> fmt::Result {
        self.put_comment(&module.header)?;
        self.blank()?;
        self.out.write_str(PRELUDE)?;
        for item in &module.items {
            self.blank()?;
            match item {
                Item::Section(lines) => self.put_section(lines)?,
                Item::Constants(constants) => self.put_constants(constants)?,
                Item::Kernel(index) => self.put_kernel(&module.kernels[*index])?,
            }
        }
        Ok(())
    }

    fn put_section(&mut self, lines: &[String]) -> fmt::Result {
        let rule = "=".repeat(75);
        self.line(format_args!("// {rule}"))?;
        self.put_comment(lines)?;
        self.line(format_args!("// {rule}"))
    }

    fn put_constants(&mut self, constants: &Constants) -> fmt::Result {
        self.put_comment(&constants.comment)?;
        self.line(format_args!("struct {} {{", constants.name))?;
        self.indent += 1;
        for (ctype, name, value) in &constants.fields {
            self.line(format_args!("static constexpr {ctype} {name} = {value};"))?;
        }
        self.indent -= 1;
        self.line(format_args!("}};"))
    }

    fn put_kernel(&mut self, kernel: &KernelDef) -> fmt::Result {
        if kernel.body.is_empty() {
            // Defined by the prelude.
            return Ok(());
        }
        self.put_comment(&kernel.comment)?;
        let block: u32 = kernel.spec.block.iter().product();
        let bounds = if kernel.min_blocks > 0 {
            format!("{block}, {}", kernel.min_blocks)
        } else {
            block.to_string()
        };
        self.line(format_args!(
            "extern \"C\" __global__ void __launch_bounds__({bounds}) {}(",
            kernel.spec.name
        ))?;
        self.indent += 1;
        let count = kernel.params.len();
        for (index, param) in kernel.params.iter().enumerate() {
            let end = if index + 1 == count { ") {" } else { "," };
            self.line(format_args!("{} {}{end}", param.ctype, param.name))?;
        }
        if count == 0 {
            self.line(format_args!(") {{"))?;
        }
        self.line(format_args!("{}", kernel.body))?;
        self.indent -= 1;
        self.line(format_args!("}}"))
    }
}
