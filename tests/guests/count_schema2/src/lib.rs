//! Declares the `count` example's state under the same name with schema version 2, as a new
//! version whose stored layout changed would: a savepoint of `count` must be refused for it.
use weir_guest::{Context, Description, Event, OpenContext, Operator, Result, ValueState};

struct CountSchema2 {
    count: ValueState<u64>,
}

impl Operator for CountSchema2 {
    fn describe() -> Description {
        Description::new("count", "2.0.0").value_state("count", 2)
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(CountSchema2 { count: ctx.value_state("count")? })
    }

    fn process(&mut self, ctx: &mut Context, _event: &Event) -> Result<()> {
        let count = self.count.get(ctx)?.unwrap_or(0) + 1;
        self.count.set(ctx, &count)
    }
}

weir_guest::export_operator!(CountSchema2);
