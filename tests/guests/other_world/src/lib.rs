//! A component of another world: valid WebAssembly, but not a weir operator.
wit_bindgen::generate!({ path: "wit", world: "greeter" });

struct Greeter;

impl Guest for Greeter {
    fn greet() -> String {
        "hello".to_string()
    }
}

export!(Greeter);
