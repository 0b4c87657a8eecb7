//! A component built against `weir:operator@0.2.0`, which this host does not implement.
wit_bindgen::generate!({ path: "wit", world: "later" });

struct Future;

impl exports::weir::operator::operator::Guest for Future {
    fn describe() -> String {
        "from the future".to_string()
    }
}

export!(Future);
