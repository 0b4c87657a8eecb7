//! Map and list state through the `state` imports (where value state travels in the frames): per
//! user, how often each page was seen (a map), the pages in the order seen (a list, cleared every
//! fifth page). Each click emits `{"key":…,"page":…,"seen":n,"distinct":d,"listed":l}`, which a
//! runtime that answers map and list calls wrongly changes.
use serde::{Deserialize, Serialize};
use weir_guest::{Context, Description, Event, ListState, MapState, OpenContext, Operator, Result};

struct PagesSeen {
    seen: MapState<String, u64>,
    pages: ListState<String>,
}

#[derive(Deserialize)]
struct Click {
    page: String,
}

#[derive(Serialize)]
struct Output<'a> {
    key: &'a str,
    page: &'a str,
    seen: u64,
    distinct: usize,
    listed: usize,
}

impl Operator for PagesSeen {
    fn describe() -> Description {
        Description::new("pages_seen", "0.1.0").map_state("seen", 1).list_state("pages", 1)
    }

    fn open(ctx: &OpenContext) -> Result<Self> {
        Ok(PagesSeen { seen: ctx.map_state("seen")?, pages: ctx.list_state("pages")? })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<()> {
        let click: Click = serde_json::from_slice(event.value).map_err(|e| weir_guest::Error::new(e.to_string()))?;
        let seen = self.seen.get(ctx, &click.page)?.unwrap_or(0) + 1;
        self.seen.insert(ctx, &click.page, &seen)?;
        if self.pages.get(ctx)?.len() >= 4 {
            self.pages.clear(ctx)?;
        }
        self.pages.push(ctx, &click.page)?;
        let distinct = self.seen.entries(ctx)?.len();
        let listed = self.pages.get(ctx)?.len();
        let key = String::from_utf8_lossy(event.key.unwrap_or_default());
        ctx.emit_json(&Output { key: &key, page: &click.page, seen, distinct, listed })
    }
}

weir_guest::export_operator!(PagesSeen);
