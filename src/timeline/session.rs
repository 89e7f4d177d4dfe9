//! The agent session's facts (title, commands, usage, options): shown with the room, not as rows.

use agent_client_protocol_schema::v1::{
    NewSessionResponse, SessionConfigKind, SessionConfigOption, SessionConfigSelectOptions,
    SessionModeState,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The agent's session as it describes it: title, slash commands, context use, and the options
/// people may change (mode, model).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionFacts {
    pub title: Option<String>,
    pub commands: Vec<CommandView>,
    pub usage: Option<UsageView>,
    pub options: Vec<OptionView>,
    /// What earlier agent processes of the session spent, and what the current one has: an
    /// adapter counts its cost from nothing when it starts (after a Stop, a restart, sleep), and
    /// the room's total never goes down.
    #[serde(default)]
    spent_before: f64,
    #[serde(default)]
    spent_now: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandView {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageView {
    /// Tokens in the context window (Claude's adapter sends none while it does not know), and
    /// its size.
    pub used: Option<u64>,
    pub size: u64,
    /// Spent so far, with its currency.
    pub cost: Option<(f64, String)>,
}

impl UsageView {
    /// A `usage_update` the schema refuses because `used` is null, as Claude's adapter sends
    /// before it knows the context's size in tokens.
    pub(super) fn lenient(params: &Value) -> Option<Self> {
        let u = params.get("update")?;
        if u.get("sessionUpdate")? != "usage_update" || !u.get("used")?.is_null() {
            return None;
        }
        let cost = u.get("cost").and_then(|c| {
            Some((
                c.get("amount")?.as_f64()?,
                c.get("currency")?.as_str()?.to_string(),
            ))
        });
        Some(UsageView {
            used: None,
            size: u.get("size")?.as_u64()?,
            cost,
        })
    }

    /// "Context 12.3k / 200k (6%) · 0.03 USD".
    pub fn label(&self) -> String {
        let k = |n: u64| {
            if n >= 1000 {
                format!("{:.1}k", n as f64 / 1000.0)
            } else {
                n.to_string()
            }
        };
        let mut label = match self.used {
            Some(used) => {
                let pct = (used * 100).checked_div(self.size).unwrap_or(0);
                format!("Context {} / {} ({pct}%)", k(used), k(self.size))
            }
            None => format!("Context window {}", k(self.size)),
        };
        if let Some((amount, currency)) = &self.cost {
            label.push_str(&format!(" · {amount:.2} {currency}"));
        }
        label
    }
}

/// The id under which a legacy mode list (`modes`) is offered as an option.
pub const MODE_OPTION: &str = "_mode";

/// A select option of the session (the mode, the model, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptionView {
    pub id: String,
    pub name: String,
    pub current: String,
    /// (value, name)
    pub choices: Vec<(String, String)>,
    /// The agent's mode (a mode list, or an option of the mode category: Codex names its
    /// "Approval Preset").
    #[serde(default)]
    pub is_mode: bool,
}

impl OptionView {
    pub(super) fn from_config(o: &SessionConfigOption) -> Option<Self> {
        let SessionConfigKind::Select(select) = &o.kind else {
            return None;
        };
        let choices = match &select.options {
            SessionConfigSelectOptions::Ungrouped(list) => list
                .iter()
                .map(|c| (c.value.to_string(), c.name.clone()))
                .collect(),
            SessionConfigSelectOptions::Grouped(groups) => groups
                .iter()
                .flat_map(|g| g.options.iter())
                .map(|c| (c.value.to_string(), c.name.clone()))
                .collect(),
            _ => Vec::new(),
        };
        let is_mode = matches!(
            o.category,
            Some(agent_client_protocol_schema::v1::SessionConfigOptionCategory::Mode)
        ) || o.id.to_string() == "mode"
            || o.name.eq_ignore_ascii_case("mode");
        Some(OptionView {
            id: o.id.to_string(),
            name: o.name.clone(),
            current: select.current_value.to_string(),
            choices,
            is_mode,
        })
    }

    pub(super) fn from_modes(m: &SessionModeState) -> Self {
        OptionView {
            id: MODE_OPTION.into(),
            name: "Mode".into(),
            current: m.current_mode_id.to_string(),
            choices: m
                .available_modes
                .iter()
                .map(|m| (m.id.to_string(), m.name.clone()))
                .collect(),
            is_mode: true,
        }
    }
}

impl SessionFacts {
    /// A new connection: a new agent process, whose cost counts from nothing.
    pub(super) fn new_process(&mut self) {
        self.spent_before += std::mem::take(&mut self.spent_now);
    }

    pub(super) fn set_usage(&mut self, mut usage: UsageView) {
        if let Some((amount, _)) = &mut usage.cost {
            self.spent_now = *amount;
            *amount += self.spent_before;
        }
        self.usage = Some(usage);
    }

    pub(super) fn set_options(&mut self, options: &[SessionConfigOption]) {
        let modes = self.options.iter().find(|o| o.id == MODE_OPTION).cloned();
        self.options = options.iter().filter_map(OptionView::from_config).collect();
        // Agents that offer a mode option need no legacy mode list.
        if let Some(m) = modes
            && !self.options.iter().any(|o| o.is_mode)
        {
            self.options.insert(0, m);
        }
    }

    /// What a session's opening answer (`session/new`, `session/load`) says.
    pub(super) fn opened(&mut self, result: &Value) {
        // `session/load` answers without a session id; the shape is otherwise the same.
        let mut result = result.clone();
        if result.get("sessionId").is_none() {
            result["sessionId"] = Value::String(String::new());
        }
        let Ok(r) = serde_json::from_value::<NewSessionResponse>(result) else {
            return;
        };
        if let Some(modes) = &r.modes {
            self.options.retain(|o| o.id != MODE_OPTION);
            self.options.insert(0, OptionView::from_modes(modes));
        }
        if let Some(options) = &r.config_options {
            self.set_options(options);
        }
    }
}
