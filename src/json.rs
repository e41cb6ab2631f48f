//! Small JSON helpers shared by the layers that read JSON from outside: the
//! tool contract (an LLM's arguments) and the MorphCloud wire parser (a
//! server's answers). It sits below both so neither imports the other.

use serde_json::Value;

/// A short description of a JSON value's type, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
