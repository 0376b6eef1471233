//! `calculator`: arithmetic the model should not do in its head.
//!
//! Expressions are parsed by hand (recursive descent into a small tree,
//! then evaluated), so nothing the model writes is ever executed as code.
//! The grammar, loosest binding first:
//!
//! ```text
//! sum     = product (("+" | "-") product)*
//! product = unary (("*" | "/" | "%") unary)*
//! unary   = ("-" | "+") unary | power
//! power   = atom ("^" unary)?          right-associative: 2^3^2 = 2^9
//! atom    = number | constant | function "(" sum ("," sum)* ")" | "(" sum ")"
//! ```
//!
//! so `-2^2` is `-4` and `2^-1` is `0.5`, as in mathematics. `%` is the
//! remainder, with the sign of the dividend. Numbers are decimals with an
//! optional exponent (`1.5e3`); constants are `pi` and `e`. Every step is
//! checked: division by zero, results too large for a double, and values
//! outside a function's domain are errors rather than `inf` or `NaN`.
//! Syntax errors give the 1-based character position.

use std::fmt;
use switchyard_common::config::BuiltinTool;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Tool, ToolError};

/// The longest expression accepted, in characters.
const MAX_EXPRESSION_CHARS: usize = 1000;
/// The deepest nesting of parentheses and signs: bounds the recursion.
const MAX_DEPTH: usize = 64;
/// Results are rounded to this many significant digits, hiding binary
/// floating-point noise (0.1 + 0.2 is 0.3, not 0.30000000000000004).
const SIGNIFICANT_DIGITS: usize = 15;

pub struct Calculator;

impl Tool for Calculator {
    fn name(&self) -> &'static str {
        BuiltinTool::Calculator.as_str()
    }

    fn description(&self) -> &'static str {
        "Evaluate an arithmetic expression exactly as written. Operators: + - * / \
         % (remainder) ^ (power), parentheses, decimals such as 1.5e3. Functions: \
         abs, ceil, cos, exp, floor, ln, log10, max, min, round (round(x) or \
         round(x, digits)), sin, sqrt, tan (radians). Constants: pi, e."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "description": "The expression, e.g. \"(17.5 * 3 - 2) / 4\".",
                    "minLength": 1,
                    "maxLength": MAX_EXPRESSION_CHARS
                }
            },
            "required": ["expression"],
            "additionalProperties": false
        })
    }

    fn call(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>> {
        async move {
            let expression = arguments["expression"].as_str().unwrap_or_default();
            let result = evaluate(expression).map_err(|e| ToolError(e.to_string()))?;
            Ok(json!({ "expression": expression, "result": to_json(result) }))
        }
        .boxed()
    }
}

/// Why an expression has no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum CalcError {
    #[error("the expression is longer than {MAX_EXPRESSION_CHARS} characters")]
    TooLong,
    #[error("the expression is nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
    #[error("{problem} at position {position}")]
    Syntax { problem: String, position: usize },
    #[error("division by zero at position {position}")]
    DivisionByZero { position: usize },
    #[error("the result at position {position} is too large")]
    Overflow { position: usize },
    #[error("{problem} at position {position}")]
    Domain {
        problem: &'static str,
        position: usize,
    },
}

/// The value of `expression`.
fn evaluate(expression: &str) -> Result<f64, CalcError> {
    if expression.chars().count() > MAX_EXPRESSION_CHARS {
        return Err(CalcError::TooLong);
    }
    let tokens = lex(expression)?;
    let mut parser = Parser {
        tokens,
        next: 0,
        depth: 0,
        end: expression.chars().count() + 1,
    };
    let tree = parser.sum()?;
    if let Some(token) = parser.tokens.get(parser.next) {
        return Err(syntax(format!("unexpected {}", token.kind), token.position));
    }
    tree.eval()
}

/// A result as JSON: integral values as integers, others rounded to
/// [`SIGNIFICANT_DIGITS`].
fn to_json(value: f64) -> Value {
    let rounded: f64 = format!("{:.*e}", SIGNIFICANT_DIGITS - 1, value)
        .parse()
        .unwrap_or(value);
    // Beyond 2^53 an integral double is no longer exact; keep it a float.
    if rounded.fract() == 0.0 && rounded.abs() < 9_007_199_254_740_992.0 {
        json!(rounded as i64)
    } else {
        json!(rounded)
    }
}

fn syntax(problem: impl Into<String>, position: usize) -> CalcError {
    CalcError::Syntax {
        problem: problem.into(),
        position,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Number(f64),
    Name(String),
    Operator(char),
    Open,
    Close,
    Comma,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "number {n}"),
            Self::Name(name) => write!(f, "{name:?}"),
            Self::Operator(op) => write!(f, "'{op}'"),
            Self::Open => f.write_str("'('"),
            Self::Close => f.write_str("')'"),
            Self::Comma => f.write_str("','"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    /// 1-based character position in the expression.
    position: usize,
}

fn lex(expression: &str) -> Result<Vec<Token>, CalcError> {
    let chars: Vec<char> = expression.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let position = i + 1;
        let kind = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '0'..='9' | '.' => {
                let start = i;
                i = skip_digits(&chars, i);
                if chars.get(i) == Some(&'.') {
                    i = skip_digits(&chars, i + 1);
                }
                // An exponent only when digits follow, so that `2e` is a
                // number and a name rather than a malformed number.
                if matches!(chars.get(i), Some('e' | 'E')) {
                    let sign = usize::from(matches!(chars.get(i + 1), Some('+' | '-')));
                    if chars.get(i + 1 + sign).is_some_and(char::is_ascii_digit) {
                        i = skip_digits(&chars, i + 1 + sign);
                    }
                }
                let text: String = chars[start..i].iter().collect();
                let number: f64 = text
                    .parse()
                    .map_err(|_| syntax(format!("malformed number {text:?}"), position))?;
                if !number.is_finite() {
                    return Err(syntax(format!("the number {text} is too large"), position));
                }
                tokens.push(Token {
                    kind: TokenKind::Number(number),
                    position,
                });
                continue;
            }
            c if c.is_ascii_alphabetic() => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                tokens.push(Token {
                    kind: TokenKind::Name(chars[start..i].iter().collect()),
                    position,
                });
                continue;
            }
            '+' | '-' | '*' | '/' | '%' | '^' => TokenKind::Operator(c),
            '(' => TokenKind::Open,
            ')' => TokenKind::Close,
            ',' => TokenKind::Comma,
            other => return Err(syntax(format!("unexpected character {other:?}"), position)),
        };
        tokens.push(Token { kind, position });
        i += 1;
    }
    Ok(tokens)
}

fn skip_digits(chars: &[char], mut i: usize) -> usize {
    while chars.get(i).is_some_and(char::is_ascii_digit) {
        i += 1;
    }
    i
}

/// A parsed expression; positions are kept for evaluation errors.
#[derive(Debug)]
enum Expr {
    Number(f64),
    Negate(Box<Expr>),
    Binary {
        op: char,
        position: usize,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Call {
        function: Function,
        position: usize,
        arguments: Vec<Expr>,
    },
}

#[derive(Debug, Clone, Copy)]
enum Function {
    Abs,
    Ceil,
    Cos,
    Exp,
    Floor,
    Ln,
    Log10,
    Max,
    Min,
    Round,
    Sin,
    Sqrt,
    Tan,
}

impl Function {
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "abs" => Self::Abs,
            "ceil" => Self::Ceil,
            "cos" => Self::Cos,
            "exp" => Self::Exp,
            "floor" => Self::Floor,
            "ln" => Self::Ln,
            "log10" => Self::Log10,
            "max" => Self::Max,
            "min" => Self::Min,
            "round" => Self::Round,
            "sin" => Self::Sin,
            "sqrt" => Self::Sqrt,
            "tan" => Self::Tan,
            _ => return None,
        })
    }

    /// How many arguments the function takes, at least and at most.
    fn arity(self) -> (usize, usize) {
        match self {
            Self::Max | Self::Min => (1, usize::MAX),
            Self::Round => (1, 2),
            _ => (1, 1),
        }
    }

    fn apply(self, arguments: &[f64], position: usize) -> Result<f64, CalcError> {
        let domain = |problem| CalcError::Domain { problem, position };
        let x = arguments[0];
        Ok(match self {
            Self::Abs => x.abs(),
            Self::Ceil => x.ceil(),
            Self::Cos => x.cos(),
            Self::Exp => x.exp(),
            Self::Floor => x.floor(),
            Self::Ln if x <= 0.0 => return Err(domain("ln needs a positive number")),
            Self::Ln => x.ln(),
            Self::Log10 if x <= 0.0 => return Err(domain("log10 needs a positive number")),
            Self::Log10 => x.log10(),
            Self::Max => arguments.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Self::Min => arguments.iter().copied().fold(f64::INFINITY, f64::min),
            Self::Round => match arguments.get(1) {
                None => x.round(),
                Some(&digits) if digits.fract() == 0.0 && (0.0..=15.0).contains(&digits) => {
                    let scale = 10f64.powi(digits as i32);
                    (x * scale).round() / scale
                }
                Some(_) => {
                    return Err(domain("round's digits must be a whole number from 0 to 15"));
                }
            },
            Self::Sin => x.sin(),
            Self::Sqrt if x < 0.0 => {
                return Err(domain("sqrt needs a number that is not negative"));
            }
            Self::Sqrt => x.sqrt(),
            Self::Tan => x.tan(),
        })
    }
}

const FUNCTION_NAMES: &str =
    "abs, ceil, cos, exp, floor, ln, log10, max, min, round, sin, sqrt, tan";

impl Expr {
    fn eval(&self) -> Result<f64, CalcError> {
        match self {
            Self::Number(n) => Ok(*n),
            Self::Negate(inner) => Ok(-inner.eval()?),
            Self::Binary {
                op,
                position,
                left,
                right,
            } => {
                let (a, b) = (left.eval()?, right.eval()?);
                let position = *position;
                let value = match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    '/' | '%' if b == 0.0 => return Err(CalcError::DivisionByZero { position }),
                    '/' => a / b,
                    '%' => a % b,
                    _ => power(a, b, position)?,
                };
                finite(value, position)
            }
            Self::Call {
                function,
                position,
                arguments,
            } => {
                let values = arguments
                    .iter()
                    .map(Expr::eval)
                    .collect::<Result<Vec<_>, _>>()?;
                finite(function.apply(&values, *position)?, *position)
            }
        }
    }
}

fn power(base: f64, exponent: f64, position: usize) -> Result<f64, CalcError> {
    if base == 0.0 && exponent < 0.0 {
        return Err(CalcError::DivisionByZero { position });
    }
    if base < 0.0 && exponent.fract() != 0.0 {
        return Err(CalcError::Domain {
            problem: "a negative number cannot be raised to a fractional power",
            position,
        });
    }
    Ok(base.powf(exponent))
}

fn finite(value: f64, position: usize) -> Result<f64, CalcError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(CalcError::Overflow { position })
    }
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    depth: usize,
    /// The position just past the expression, for "unexpected end".
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&TokenKind> {
        self.tokens.get(self.next).map(|t| &t.kind)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |t| t.position)
    }

    /// The next token, which must exist.
    fn take(&mut self, wanted: &str) -> Result<Token, CalcError> {
        let token = self.tokens.get(self.next).cloned().ok_or_else(|| {
            syntax(
                format!("expected {wanted} but the expression ended"),
                self.end,
            )
        })?;
        self.next += 1;
        Ok(token)
    }

    fn descend(&mut self) -> Result<(), CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CalcError::TooDeep);
        }
        Ok(())
    }

    fn sum(&mut self) -> Result<Expr, CalcError> {
        self.descend()?;
        let mut left = self.product()?;
        while let Some(TokenKind::Operator(op @ ('+' | '-'))) = self.peek() {
            let (op, position) = (*op, self.position());
            self.next += 1;
            let right = self.product()?;
            left = binary(op, position, left, right);
        }
        self.depth -= 1;
        Ok(left)
    }

    fn product(&mut self) -> Result<Expr, CalcError> {
        let mut left = self.unary()?;
        while let Some(TokenKind::Operator(op @ ('*' | '/' | '%'))) = self.peek() {
            let (op, position) = (*op, self.position());
            self.next += 1;
            let right = self.unary()?;
            left = binary(op, position, left, right);
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, CalcError> {
        match self.peek() {
            Some(TokenKind::Operator(sign @ ('+' | '-'))) => {
                let negate = *sign == '-';
                self.next += 1;
                self.descend()?;
                let operand = self.unary()?;
                self.depth -= 1;
                Ok(if negate {
                    Expr::Negate(Box::new(operand))
                } else {
                    operand
                })
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<Expr, CalcError> {
        let base = self.atom()?;
        if let Some(TokenKind::Operator('^')) = self.peek() {
            let position = self.position();
            self.next += 1;
            self.descend()?;
            let exponent = self.unary()?;
            self.depth -= 1;
            return Ok(binary('^', position, base, exponent));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Expr, CalcError> {
        let token = self.take("a number")?;
        match token.kind {
            TokenKind::Number(n) => Ok(Expr::Number(n)),
            TokenKind::Open => {
                let inner = self.sum()?;
                self.close(token.position)?;
                Ok(inner)
            }
            TokenKind::Name(name) => self.name(&name, token.position),
            other => Err(syntax(
                format!("expected a number but found {other}"),
                token.position,
            )),
        }
    }

    fn name(&mut self, name: &str, position: usize) -> Result<Expr, CalcError> {
        match name {
            "pi" => return Ok(Expr::Number(std::f64::consts::PI)),
            "e" => return Ok(Expr::Number(std::f64::consts::E)),
            _ => {}
        }
        let function = Function::named(name).ok_or_else(|| {
            syntax(
                format!("unknown name {name:?} (functions: {FUNCTION_NAMES}; constants: pi, e)"),
                position,
            )
        })?;
        if self.peek() != Some(&TokenKind::Open) {
            return Err(syntax(
                format!("{name} needs parentheses: {name}(…)"),
                position,
            ));
        }
        let open = self.position();
        self.next += 1;
        let mut arguments = vec![self.sum()?];
        while self.peek() == Some(&TokenKind::Comma) {
            self.next += 1;
            arguments.push(self.sum()?);
        }
        self.close(open)?;
        let (least, most) = function.arity();
        if !(least..=most).contains(&arguments.len()) {
            let expected = match (least, most) {
                (1, 1) => "one argument".to_owned(),
                (1, usize::MAX) => "at least one argument".to_owned(),
                (least, most) => format!("{least} to {most} arguments"),
            };
            return Err(syntax(
                format!("{name} takes {expected}, not {}", arguments.len()),
                position,
            ));
        }
        Ok(Expr::Call {
            function,
            position,
            arguments,
        })
    }

    /// The `)` matching the `(` at `open`.
    fn close(&mut self, open: usize) -> Result<(), CalcError> {
        match self.peek() {
            Some(TokenKind::Close) => {
                self.next += 1;
                Ok(())
            }
            Some(other) => Err(syntax(
                format!("expected ')' but found {other}"),
                self.position(),
            )),
            None => Err(syntax("'(' is never closed", open)),
        }
    }
}

fn binary(op: char, position: usize, left: Expr, right: Expr) -> Expr {
    Expr::Binary {
        op,
        position,
        left: Box::new(left),
        right: Box::new(right),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(expression: &str) -> f64 {
        evaluate(expression).unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    fn error(expression: &str) -> String {
        match evaluate(expression) {
            Ok(v) => panic!("{expression} = {v}, expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(value("1 + 2 * 3"), 7.0);
        assert_eq!(value("(1 + 2) * 3"), 9.0);
        assert_eq!(value("10 - 4 - 3"), 3.0);
        assert_eq!(value("64 / 4 / 2"), 8.0);
        assert_eq!(value("2 ^ 3 ^ 2"), 512.0);
        assert_eq!(value("2 * 3 ^ 2"), 18.0);
        assert_eq!(value("-2 ^ 2"), -4.0);
        assert_eq!(value("(-2) ^ 2"), 4.0);
        assert_eq!(value("2 ^ -1"), 0.5);
        assert_eq!(value("7 % 3"), 1.0);
        assert_eq!(value("-7 % 3"), -1.0);
        assert_eq!(value("5.5 % 2"), 1.5);
        assert_eq!(value("2 + 10 % 4 * 3"), 8.0);
    }

    #[test]
    fn signs_numbers_and_whitespace() {
        assert_eq!(value("--3"), 3.0);
        assert_eq!(value("+3 - -3"), 6.0);
        assert_eq!(value("3 * -2"), -6.0);
        assert_eq!(value(".5 + 1."), 1.5);
        assert_eq!(value("1.5e3"), 1500.0);
        assert_eq!(value("2E-2"), 0.02);
        assert_eq!(value("1e+2"), 100.0);
        assert_eq!(value(" \t( 1+1 )\n"), 2.0);
    }

    #[test]
    fn functions_and_constants() {
        assert_eq!(value("sqrt(16)"), 4.0);
        assert_eq!(value("abs(-3.5)"), 3.5);
        assert_eq!(value("round(2.5)"), 3.0);
        assert_eq!(value("round(-2.5)"), -3.0);
        assert_eq!(value("round(1.23456, 2)"), 1.23);
        assert_eq!(value("floor(-1.5) + ceil(1.2)"), 0.0);
        assert_eq!(value("max(1, 7, 3) - min(4, -2)"), 9.0);
        assert_eq!(value("ln(e)"), 1.0);
        assert_eq!(value("log10(1000)"), 3.0);
        assert_eq!(value("exp(0)"), 1.0);
        assert_eq!(value("cos(0) + sin(0) + tan(0)"), 1.0);
        assert!((value("pi") - std::f64::consts::PI).abs() < 1e-15);
        assert_eq!(value("sqrt(max(9, 16)) * 2"), 8.0);
    }

    #[test]
    fn division_by_zero_is_an_error_with_its_position() {
        assert_eq!(error("1 / 0"), "division by zero at position 3");
        assert_eq!(error("1 % (2 - 2)"), "division by zero at position 3");
        assert_eq!(error("0 ^ -1"), "division by zero at position 3");
    }

    #[test]
    fn overflow_and_undefined_results_are_errors() {
        assert_eq!(error("10 ^ 400"), "the result at position 4 is too large");
        assert_eq!(error("1e308 * 10"), "the result at position 7 is too large");
        assert_eq!(error("exp(1000)"), "the result at position 1 is too large");
        assert_eq!(
            error("1e999"),
            "the number 1e999 is too large at position 1"
        );
        assert!(error("sqrt(-1)").starts_with("sqrt needs a number that is not negative"));
        assert!(error("ln(0)").starts_with("ln needs a positive number"));
        assert!(error("log10(-5)").starts_with("log10 needs a positive number"));
        assert!(error("(-8) ^ 0.5").starts_with("a negative number cannot be raised"));
        assert!(error("round(1, 2.5)").starts_with("round's digits"));
    }

    #[test]
    fn syntax_errors_say_where() {
        assert_eq!(
            error(""),
            "expected a number but the expression ended at position 1"
        );
        assert_eq!(
            error("1 +"),
            "expected a number but the expression ended at position 4"
        );
        assert_eq!(
            error("1 + * 2"),
            "expected a number but found '*' at position 5"
        );
        assert_eq!(error("1 2"), "unexpected number 2 at position 3");
        assert_eq!(error("(1 + 2"), "'(' is never closed at position 1");
        assert_eq!(error("max(1, (2)"), "'(' is never closed at position 4");
        assert_eq!(error("1 + 2)"), "unexpected ')' at position 6");
        assert_eq!(error("2 # 3"), "unexpected character '#' at position 3");
        assert_eq!(error("2e"), "unexpected \"e\" at position 2");
        assert_eq!(error("1..2"), "unexpected number 0.2 at position 3");
        assert_eq!(error("."), "malformed number \".\" at position 1");
        assert!(error("foo(1)").starts_with("unknown name \"foo\" (functions: abs,"));
        assert_eq!(
            error("sqrt 4"),
            "sqrt needs parentheses: sqrt(…) at position 1"
        );
        assert_eq!(
            error("sqrt(1, 2)"),
            "sqrt takes one argument, not 2 at position 1"
        );
        assert_eq!(
            error("round(1, 2, 3)"),
            "round takes 1 to 2 arguments, not 3 at position 1"
        );
        assert_eq!(
            error("max(1,)"),
            "expected a number but found ')' at position 7"
        );
    }

    #[test]
    fn limits_bound_length_and_nesting() {
        assert_eq!(
            error(&"1+".repeat(600)),
            "the expression is longer than 1000 characters"
        );
        let nested = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(
            error(&nested),
            "the expression is nested more than 64 levels deep"
        );
        assert_eq!(
            error(&"-".repeat(100)),
            "the expression is nested more than 64 levels deep"
        );
        let shallow = format!("{}1{}", "(".repeat(30), ")".repeat(30));
        assert_eq!(value(&shallow), 1.0);
    }

    #[test]
    fn results_are_integers_when_whole_and_free_of_float_noise() {
        assert_eq!(to_json(value("0.1 + 0.2")), json!(0.3));
        assert_eq!(to_json(value("2 + 2")), json!(4));
        assert_eq!(to_json(value("1 / 3")), json!(0.333333333333333));
        assert_eq!(to_json(value("-10 / 4")), json!(-2.5));
        assert_eq!(to_json(value("2 ^ 60")), json!(1.15292150460685e18));
    }

    #[tokio::test]
    async fn the_tool_answers_with_expression_and_result() {
        let answer = Calculator
            .call(json!({"expression": "(17.5 * 3 - 2) / 4"}))
            .await
            .unwrap();
        assert_eq!(
            answer,
            json!({"expression": "(17.5 * 3 - 2) / 4", "result": 12.625})
        );
        let err = Calculator
            .call(json!({"expression": "1/0"}))
            .await
            .unwrap_err();
        assert_eq!(err.0, "division by zero at position 2");
    }
}
