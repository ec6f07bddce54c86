//! The hosted connect flow. The host product's backend mints a session
//! (`sessions`: `POST /v1/connect/sessions`, admin token) and sends its user to the
//! session's URL; the connect page (`page`) shows the provider and a Connect button or a
//! credential form; `flow` takes the user to the provider's consent screen and back
//! (`GET /connect/{token}/start`, `GET /v1/connect/callback`) or takes the form, then
//! writes the connection (or new credentials for a re-authorization), publishes the news
//! and sends the user back to the session's `return_url`. A failure writes no connection
//! and no credential: it records its reason on the session and in the return URL.

mod flow;
mod page;
mod sessions;

use tributary::connect::apps::Apps;
use tributary::connect::ConnectSettings;

pub use flow::{callback, credentials_form, start};
pub use page::show as connect_page;
pub use sessions::{create as create_session, show as show_session};

/// What the connect flow needs besides the API's state.
#[derive(Debug, Clone, Default)]
pub struct ConnectState {
    pub settings: ConnectSettings,
    pub apps: Apps,
}

impl ConnectState {
    /// `<public url>/v1/connect/callback`, the redirect URI every OAuth app registers.
    pub fn callback_url(&self) -> Option<String> {
        self.public_url()
            .map(|u| format!("{u}/v1/connect/callback"))
    }

    fn public_url(&self) -> Option<&str> {
        self.settings
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/'))
    }
}
