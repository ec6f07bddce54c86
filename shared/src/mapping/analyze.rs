//! Reading a mapping's tree: which of its object constructor's fields are plain
//! paths, and which parts of a record the other fields can see.
//!
//! The shape recognized is `{ "k": expr, ... }`, alone or as the last statement of a
//! block. The block's statements that bind a variable once to a plain path
//! (`$p := properties`) are aliases: `$p.firstname` reads `properties.firstname`.

use std::collections::{HashMap, HashSet};

use jsonata_core::ast::{AstNode, BinaryOp, PathStep, Stage, StepId};

use super::paths::Needed;

/// One field of the object constructor.
#[derive(Debug, Clone)]
pub enum Field {
    /// A plain path from the record's root, aliases resolved.
    Path(Vec<String>),
    /// Anything else: the evaluator answers it.
    Computed(AstNode),
}

/// A mapping split into its parts.
#[derive(Debug, Clone)]
pub struct Split {
    /// The block's statements before the object constructor, in order.
    pub statements: Vec<AstNode>,
    /// Whether the statements only bind aliases and functions (evaluating them
    /// cannot fail, so they need not run when no field is computed).
    pub statements_are_bindings: bool,
    pub fields: Vec<(String, Field)>,
    aliases: HashMap<String, Vec<String>>,
    functions: HashSet<String>,
    /// How many times each variable name is bound anywhere in the mapping.
    bound: HashMap<String, usize>,
}

/// `None` when the mapping is not an object constructor with distinct literal keys.
pub fn split(ast: &AstNode) -> Option<Split> {
    let (statements, object) = match ast {
        AstNode::Block(items) => {
            let (last, rest) = items.split_last()?;
            (rest.to_vec(), last)
        }
        other => (Vec::new(), other),
    };
    let AstNode::Object(pairs) = object else {
        return None;
    };
    let mut bound = HashMap::new();
    bindings(ast, &mut bound);
    let (aliases, functions) = top_bindings(&statements, &bound);
    let statements_are_bindings = statements.iter().all(|s| match binding(s) {
        Some((name, rhs)) => {
            aliases.contains_key(name) || (functions.contains(name) && is_lambda(rhs))
        }
        None => false,
    });
    let mut seen = HashSet::new();
    let mut fields = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        let AstNode::String(key) = key else {
            return None;
        };
        // Two fields with one key are the evaluator's to report.
        if !seen.insert(key.clone()) {
            return None;
        }
        let field = match plain_path(value, &aliases) {
            Some(path) => Field::Path(path),
            None => Field::Computed(value.clone()),
        };
        fields.push((key.clone(), field));
    }
    Some(Split {
        statements,
        statements_are_bindings,
        fields,
        aliases,
        functions,
        bound,
    })
}

impl Split {
    /// The plain path `node` reads from the root, aliases resolved.
    pub fn path_of(&self, node: &AstNode) -> Option<Vec<String>> {
        plain_path(node, &self.aliases)
    }

    /// Whether `name` is bound as a variable anywhere in the mapping.
    pub fn is_bound(&self, name: &str) -> bool {
        self.bound.contains_key(name)
    }

    /// What of a record the computed fields (and the statements) can read; `None`
    /// when that cannot be told (the whole record must be converted).
    pub fn needed(&self) -> Option<Needed> {
        let mut walk = Walk {
            split: self,
            needed: Needed::default(),
        };
        let computed = self.fields.iter().filter_map(|(_, f)| match f {
            Field::Computed(node) => Some(node),
            Field::Path(_) => None,
        });
        for node in self.statements.iter().chain(computed) {
            walk.node(node)?;
        }
        Some(walk.needed)
    }
}

/// The computed fields and the statements with every alias replaced by its path
/// (`$p.name` by `properties.name`), the alias statements dropped: variables keep
/// the evaluator on its tree walker, paths let it compile the expression. Only
/// exact where each alias holds no array (the caller checks, record by record),
/// and only done where an alias is read in the record's own context.
pub struct Substituted {
    pub statements: Vec<AstNode>,
    pub computed: Vec<(String, AstNode)>,
    /// Every alias's path, to check in each record.
    pub alias_paths: Vec<Vec<String>>,
}

impl Split {
    pub fn substituted(&self) -> Option<Substituted> {
        let mut statements = Vec::new();
        for statement in &self.statements {
            match binding(statement) {
                Some((name, _)) if self.aliases.contains_key(name) => {}
                _ => statements.push(self.rewrite(statement)?),
            }
        }
        let mut computed = Vec::new();
        for (key, field) in &self.fields {
            if let Field::Computed(node) = field {
                computed.push((key.clone(), self.rewrite(node)?));
            }
        }
        Some(Substituted {
            statements,
            computed,
            alias_paths: self.aliases.values().cloned().collect(),
        })
    }

    /// `node` in the record's context, aliases replaced; `None` where an alias is
    /// read elsewhere (in a predicate, a later step, a function's body).
    fn rewrite(&self, node: &AstNode) -> Option<AstNode> {
        let all = |items: &[AstNode]| {
            items
                .iter()
                .map(|n| self.rewrite(n))
                .collect::<Option<Vec<_>>>()
        };
        let boxed = |n: &AstNode| self.rewrite(n).map(Box::new);
        Some(match node {
            AstNode::Variable(name) => match self.aliases.get(name) {
                Some(path) => names_path(path, &[]),
                None => node.clone(),
            },
            AstNode::Path { steps } => {
                let alias = match &steps[0].node {
                    AstNode::Variable(name) if bare(&steps[0]) => self.aliases.get(name),
                    _ => None,
                };
                let rest = if alias.is_some() {
                    &steps[1..]
                } else {
                    &steps[..]
                };
                if rest.iter().any(|s| self.step_reads_alias(s)) {
                    return None;
                }
                match alias {
                    Some(path) => names_path(path, rest),
                    None => node.clone(),
                }
            }
            AstNode::Binary { op, lhs, rhs } => AstNode::Binary {
                op: *op,
                lhs: if *op == BinaryOp::ColonEqual {
                    lhs.clone()
                } else {
                    boxed(lhs)?
                },
                rhs: boxed(rhs)?,
            },
            AstNode::Unary { op, operand } => AstNode::Unary {
                op: *op,
                operand: boxed(operand)?,
            },
            AstNode::Function {
                name,
                args,
                is_builtin,
            } => AstNode::Function {
                name: name.clone(),
                args: all(args)?,
                is_builtin: *is_builtin,
            },
            AstNode::Array(items) => AstNode::Array(all(items)?),
            AstNode::Block(items) => AstNode::Block(all(items)?),
            AstNode::Object(pairs) => AstNode::Object(
                pairs
                    .iter()
                    .map(|(k, v)| Some((self.rewrite(k)?, self.rewrite(v)?)))
                    .collect::<Option<Vec<_>>>()?,
            ),
            AstNode::Conditional {
                condition,
                then_branch,
                else_branch,
            } => AstNode::Conditional {
                condition: boxed(condition)?,
                then_branch: boxed(then_branch)?,
                else_branch: match else_branch {
                    Some(e) => Some(boxed(e)?),
                    None => None,
                },
            },
            // Anything else evaluates its parts in other contexts: kept only alias-free.
            other if self.reads_alias(other) => return None,
            other => other.clone(),
        })
    }

    fn reads_alias(&self, node: &AstNode) -> bool {
        if let AstNode::Variable(name) = node {
            return self.aliases.contains_key(name);
        }
        let mut found = false;
        children(node, &mut |child| found = found || self.reads_alias(child));
        found
    }

    fn step_reads_alias(&self, step: &PathStep) -> bool {
        self.reads_alias(&step.node)
            || step.stages.iter().any(|stage| match stage {
                Stage::Filter(expr) => self.reads_alias(expr),
                _ => false,
            })
    }
}

/// The path `names` followed by `rest` (steps copied get new identities, as the
/// evaluator's cache of step bodies asks of changed steps).
fn names_path(names: &[String], rest: &[PathStep]) -> AstNode {
    let steps = names
        .iter()
        .map(|n| PathStep::new(AstNode::Name(n.clone())))
        .chain(rest.iter().map(|s| PathStep {
            id: StepId::default(),
            ..s.clone()
        }))
        .collect();
    AstNode::Path { steps }
}

/// `$name := rhs`.
fn binding(node: &AstNode) -> Option<(&str, &AstNode)> {
    match node {
        AstNode::Binary {
            op: BinaryOp::ColonEqual,
            lhs,
            rhs,
        } => match &**lhs {
            AstNode::Variable(name) => Some((name.as_str(), &**rhs)),
            _ => None,
        },
        _ => None,
    }
}

fn is_lambda(node: &AstNode) -> bool {
    matches!(node, AstNode::Lambda { signature, .. } if !signature.as_deref().is_some_and(|s| s.contains('-')))
}

/// The aliases and the functions the block's statements bind. Only names bound
/// once in the whole mapping count: a second binding anywhere (a lambda parameter,
/// a `:=` inside an expression) could change what the name holds.
fn top_bindings(
    statements: &[AstNode],
    bound: &HashMap<String, usize>,
) -> (HashMap<String, Vec<String>>, HashSet<String>) {
    let mut aliases = HashMap::new();
    let mut functions = HashSet::new();
    for (name, rhs) in statements.iter().filter_map(binding) {
        if bound.get(name) != Some(&1) || name.is_empty() {
            continue;
        }
        if is_lambda(rhs) {
            functions.insert(name.to_string());
        } else if let Some(path) = plain_path(rhs, &aliases) {
            aliases.insert(name.to_string(), path);
        }
    }
    (aliases, functions)
}

/// Count every variable name bound anywhere (`:=`, lambda parameters, `@$v`, `#$i`).
fn bindings(node: &AstNode, out: &mut HashMap<String, usize>) {
    let mut add = |name: &str| *out.entry(name.to_string()).or_default() += 1;
    if let Some((name, _)) = binding(node) {
        add(name);
    }
    if let AstNode::Lambda { params, .. } = node {
        params.iter().for_each(|p| add(p));
    }
    if let AstNode::Path { steps } = node {
        for step in steps {
            step.focus
                .iter()
                .chain(&step.index_var)
                .for_each(|v| add(v));
            for stage in &step.stages {
                if let Stage::Index(name) = stage {
                    add(name);
                }
            }
        }
    }
    children(node, &mut |child| bindings(child, out));
}

/// A step that only names a field: no predicate, binding or parent reference.
fn bare(step: &PathStep) -> bool {
    step.stages.is_empty()
        && step.focus.is_none()
        && step.index_var.is_none()
        && step.ancestor_label.is_none()
        && !step.is_tuple
        && !step.inner_tuple
}

/// `a.b.c`, `$alias.b.c` or `$alias` as a path from the root.
fn plain_path(node: &AstNode, aliases: &HashMap<String, Vec<String>>) -> Option<Vec<String>> {
    let steps = match node {
        AstNode::Name(name) => return Some(vec![name.clone()]),
        AstNode::Variable(name) => return aliases.get(name).cloned(),
        AstNode::Path { steps } => steps,
        _ => return None,
    };
    let (first, rest) = steps.split_first()?;
    let mut path = match &first.node {
        AstNode::Name(name) => vec![name.clone()],
        AstNode::Variable(name) => aliases.get(name)?.clone(),
        _ => return None,
    };
    if !bare(first) {
        return None;
    }
    for step in rest {
        match &step.node {
            AstNode::Name(name) if bare(step) => path.push(name.clone()),
            _ => return None,
        }
    }
    Some(path)
}

/// Builtins whose first parameter falls back to the context (`-`) and accepts an
/// object, with how many parameters they take: called with fewer, they may read
/// the record itself, which the partial conversion does not hold.
const READS_OBJECT_CONTEXT: &[(&str, usize)] = &[
    ("boolean", 1),
    ("each", 2),
    ("keys", 1),
    ("lookup", 2),
    ("not", 1),
    ("sift", 2),
    ("spread", 1),
    ("string", 1),
];

/// Builtins that never read the context, or only where it is a string or a
/// number (the root the partial conversion changes is an object).
const OTHER_BUILTINS: &[&str] = &[
    "abs",
    "append",
    "assert",
    "average",
    "base64decode",
    "base64encode",
    "ceil",
    "contains",
    "count",
    "decodeUrl",
    "decodeUrlComponent",
    "distinct",
    "encodeUrl",
    "encodeUrlComponent",
    "error",
    "exists",
    "filter",
    "floor",
    "formatBase",
    "formatInteger",
    "formatNumber",
    "fromMillis",
    "join",
    "length",
    "lowercase",
    "map",
    "match",
    "max",
    "merge",
    "millis",
    "min",
    "now",
    "number",
    "pad",
    "parseInteger",
    "power",
    "random",
    "reduce",
    "replace",
    "reverse",
    "round",
    "shuffle",
    "single",
    "sort",
    "split",
    "sqrt",
    "substring",
    "substringAfter",
    "substringBefore",
    "sum",
    "toMillis",
    "trim",
    "type",
    "uppercase",
    "zip",
];

/// The walk collecting what a tree reads from the record.
struct Walk<'s> {
    split: &'s Split,
    needed: Needed,
}

impl Walk<'_> {
    /// `None`: the tree may read the record in a way not told by its paths.
    fn node(&mut self, node: &AstNode) -> Option<()> {
        match node {
            // `$` and `$$` are the record itself; `*`, `**` and `%` enumerate or climb it.
            AstNode::Variable(name) if name.is_empty() => return None,
            AstNode::ParentVariable(_)
            | AstNode::Wildcard
            | AstNode::Descendant
            | AstNode::Parent(_)
            | AstNode::Transform { .. }
            | AstNode::Call { .. } => return None,
            AstNode::Binary {
                op: BinaryOp::FocusBind | BinaryOp::IndexBind,
                ..
            } => return None,
            AstNode::Lambda { signature, .. }
                if signature.as_deref().is_some_and(|s| s.contains('-')) =>
            {
                return None
            }
            AstNode::Function { name, args, .. } if !self.call_is_safe(name, args.len()) => {
                return None
            }
            AstNode::Name(name) => self.needed.add(std::slice::from_ref(name)),
            AstNode::Variable(name) => {
                if let Some(path) = self.split.aliases.get(name) {
                    self.needed.add(path);
                }
            }
            AstNode::Path { steps } => return self.path(steps),
            _ => {}
        }
        if let Some((_, rhs)) = binding(node) {
            return self.node(rhs);
        }
        let mut result = Some(());
        children(node, &mut |child| {
            if result.is_some() {
                result = self.node(child);
            }
        });
        result
    }

    /// A path from the root needs the subtree where its field names end; the steps
    /// after are read in there (their own names are added too, which is more
    /// than needed but never less).
    fn path(&mut self, steps: &[PathStep]) -> Option<()> {
        let root = match steps.first().map(|s| &s.node) {
            Some(AstNode::Name(name)) => Some(vec![name.clone()]),
            Some(AstNode::Variable(name)) => self.split.aliases.get(name).cloned(),
            _ => None,
        };
        let mut rest = steps;
        if let Some(mut path) = root {
            let mut taken = 1;
            if bare(&steps[0]) {
                for step in &steps[1..] {
                    let AstNode::Name(name) = &step.node else {
                        break;
                    };
                    path.push(name.clone());
                    taken += 1;
                    if !bare(step) {
                        break;
                    }
                }
            }
            self.needed.add(&path);
            // The stages of the steps taken still run (predicates over what was taken).
            for step in &steps[..taken] {
                self.stages(step)?;
            }
            rest = &steps[taken..];
        }
        for step in rest {
            self.node(&step.node)?;
            self.stages(step)?;
        }
        Some(())
    }

    fn stages(&mut self, step: &PathStep) -> Option<()> {
        for stage in &step.stages {
            if let Stage::Filter(expr) = stage {
                self.node(expr)?;
            }
        }
        Some(())
    }

    fn call_is_safe(&self, name: &str, argc: usize) -> bool {
        if self.split.functions.contains(name) {
            return true;
        }
        // A variable holding a function of unknown kind may be a builtin reading the context.
        if self.split.bound.contains_key(name) {
            return false;
        }
        if let Some((_, arity)) = READS_OBJECT_CONTEXT.iter().find(|(n, _)| *n == name) {
            return argc >= *arity;
        }
        OTHER_BUILTINS.contains(&name)
    }
}

/// Call `f` on every direct child of `node`.
fn children(node: &AstNode, f: &mut dyn FnMut(&AstNode)) {
    match node {
        AstNode::Path { steps } => {
            for step in steps {
                f(&step.node);
                for stage in &step.stages {
                    if let Stage::Filter(expr) = stage {
                        f(expr);
                    }
                }
            }
        }
        AstNode::Binary { lhs, rhs, .. } => {
            f(lhs);
            f(rhs);
        }
        AstNode::Unary { operand, .. } => f(operand),
        AstNode::Function { args, .. } => args.iter().for_each(f),
        AstNode::Call { procedure, args } => {
            f(procedure);
            args.iter().for_each(f);
        }
        AstNode::Lambda { body, .. } => f(body),
        AstNode::Array(items) | AstNode::ArrayGroup(items) | AstNode::Block(items) => {
            items.iter().for_each(f)
        }
        AstNode::Object(pairs) => pairs.iter().for_each(|(k, v)| {
            f(k);
            f(v);
        }),
        AstNode::ObjectTransform { input, pattern } => {
            f(input);
            pattern.iter().for_each(|(k, v)| {
                f(k);
                f(v);
            });
        }
        AstNode::Conditional {
            condition,
            then_branch,
            else_branch,
        } => {
            f(condition);
            f(then_branch);
            if let Some(e) = else_branch {
                f(e);
            }
        }
        AstNode::FunctionApplication(inner) => f(inner),
        AstNode::Sort { input, terms } => {
            f(input);
            terms.iter().for_each(|(t, _)| f(t));
        }
        AstNode::Transform {
            location,
            update,
            delete,
        } => {
            f(location);
            f(update);
            if let Some(d) = delete {
                f(d);
            }
        }
        AstNode::String(_)
        | AstNode::Name(_)
        | AstNode::Number(_)
        | AstNode::Boolean(_)
        | AstNode::Null
        | AstNode::Undefined
        | AstNode::Placeholder
        | AstNode::Regex { .. }
        | AstNode::Variable(_)
        | AstNode::ParentVariable(_)
        | AstNode::Wildcard
        | AstNode::Descendant
        | AstNode::Parent(_) => {}
    }
}
