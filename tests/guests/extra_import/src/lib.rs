//! A weir operator that imports `test:extra/vault`, which no host provides: loading it must fail
//! with a message naming that import and what the host provides instead.
wit_bindgen::generate!({ path: "wit", world: "test:extra/operator-with-vault", generate_all });

use exports::weir::operator::operator::{Context, Description, Guest};

struct ExtraImport;

impl Guest for ExtraImport {
    fn describe() -> Description {
        Description { name: "extra-import".to_string(), version: "0.1.0".to_string(), states: Vec::new() }
    }

    fn open(_config: String, _context: Context) -> Result<(), String> {
        Ok(())
    }

    fn migrate(_state: u32, _from_version: u32, items: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, String> {
        Ok(items)
    }

    fn process_batch(_batch: Vec<u8>) -> Result<Vec<u8>, String> {
        Err(test::extra::vault::secret("never reached"))
    }
}

export!(ExtraImport);
