//! Outgoing e-mail: SMTP through lettre, or (in `pgstack dev` without SMTP) the log.
//! Templates are built in and can be overridden per kind by files in
//! MAILER_TEMPLATES_DIR (`confirmation.html`, `recovery.html`, `magic_link.html`,
//! `email_change.html`) using GoTrue's placeholders `{{ .ConfirmationURL }}`,
//! `{{ .Token }}` (the link's token), `{{ .Code }}` (magic links only), `{{ .Email }}`,
//! `{{ .NewEmail }}` (e-mail change), `{{ .SiteURL }}`. Only the magic-link e-mail
//! carries a 6-digit code; the other kinds are redeemed by their link token only.

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Config;

/// Which e-mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Confirm the address after sign-up.
    Confirmation,
    /// Reset the password.
    Recovery,
    /// Passwordless sign-in (link and code).
    MagicLink,
    /// Confirm a new address.
    EmailChange,
}

impl Kind {
    fn file(self) -> &'static str {
        match self {
            Kind::Confirmation => "confirmation.html",
            Kind::Recovery => "recovery.html",
            Kind::MagicLink => "magic_link.html",
            Kind::EmailChange => "email_change.html",
        }
    }
    fn subject(self) -> &'static str {
        match self {
            Kind::Confirmation => "Confirm your email",
            Kind::Recovery => "Reset your password",
            Kind::MagicLink => "Your sign-in link",
            Kind::EmailChange => "Confirm your new email",
        }
    }
    fn default_body(self) -> &'static str {
        match self {
            Kind::Confirmation => "<h2>Confirm your email</h2><p>Follow this link to confirm your account:</p><p><a href=\"{{ .ConfirmationURL }}\">{{ .ConfirmationURL }}</a></p>",
            Kind::Recovery => "<h2>Reset your password</h2><p>Follow this link to choose a new password:</p><p><a href=\"{{ .ConfirmationURL }}\">{{ .ConfirmationURL }}</a></p><p>Reset token: {{ .Token }}</p>",
            Kind::MagicLink => "<h2>Sign in</h2><p>Follow this link to sign in:</p><p><a href=\"{{ .ConfirmationURL }}\">{{ .ConfirmationURL }}</a></p><p>Or enter this code: {{ .Code }}</p>",
            Kind::EmailChange => "<h2>Confirm your new email</h2><p>Follow this link to confirm the change of your email to {{ .NewEmail }}:</p><p><a href=\"{{ .ConfirmationURL }}\">{{ .ConfirmationURL }}</a></p><p>The change applies once the links sent to the current and to the new address have both been followed.</p>",
        }
    }
}

/// What goes into a template.
pub struct Fields<'a> {
    /// The link to follow.
    pub url: &'a str,
    /// The token inside the link.
    pub token: &'a str,
    /// A short code (magic link / OTP), if any.
    pub code: Option<&'a str>,
    /// The recipient (for an e-mail change: the current address, as GoTrue's `{{ .Email }}`).
    pub email: &'a str,
    /// The new address of an e-mail change (`{{ .NewEmail }}`).
    pub new_email: Option<&'a str>,
}

/// How mail leaves the gateway.
// One value per process: the SMTP transport's size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Mailer {
    /// Through SMTP.
    Smtp(AsyncSmtpTransport<Tokio1Executor>, String),
    /// Written to the log (pgstack dev without SMTP).
    Log,
    /// Not configured: sending fails.
    Disabled,
}

impl Mailer {
    /// Builds the mailer for `cfg`.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Mailer> {
        let Some(smtp) = &cfg.smtp else {
            return Ok(if cfg.mailer_log_only { Mailer::Log } else { Mailer::Disabled });
        };
        let mut b = match smtp.tls.as_str() {
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?,
            _ => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
        }
        .port(smtp.port)
        .timeout(Some(std::time::Duration::from_secs(10)));
        if let (Some(u), Some(p)) = (&smtp.user, &smtp.pass) {
            b = b.credentials(Credentials::new(u.clone(), p.expose().to_owned()));
        }
        smtp.sender.parse::<Mailbox>().map_err(|e| anyhow::anyhow!("SMTP_SENDER is not an address: {e}"))?;
        Ok(Mailer::Smtp(b.build(), smtp.sender.clone()))
    }

    /// True when mail can be delivered (or logged in dev).
    pub fn enabled(&self) -> bool {
        !matches!(self, Mailer::Disabled)
    }

    /// Renders and sends one e-mail.
    pub async fn send(&self, cfg: &Config, kind: Kind, to: &str, f: &Fields<'_>) -> anyhow::Result<()> {
        let template = cfg
            .mailer_templates_dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(std::path::Path::new(d).join(kind.file())).ok())
            .unwrap_or_else(|| kind.default_body().to_owned());
        let html = render(&template, cfg, f);
        match self {
            Mailer::Disabled => anyhow::bail!("no SMTP server is configured (SMTP_HOST)"),
            Mailer::Log => {
                tracing::info!(to, kind = ?kind, link = f.url, code = f.code.unwrap_or(""), "e-mail not sent (no SMTP in pgstack dev); follow the link");
                Ok(())
            }
            Mailer::Smtp(transport, sender) => {
                let text = format!("{}\n\n{}\n", kind.subject(), f.url);
                let msg = Message::builder().from(sender.parse()?).to(to.parse()?).subject(kind.subject()).multipart(
                    MultiPart::alternative()
                        .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(text))
                        .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html)),
                )?;
                transport.send(msg).await?;
                Ok(())
            }
        }
    }
}

fn render(template: &str, cfg: &Config, f: &Fields<'_>) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    template
        .replace("{{ .ConfirmationURL }}", &esc(f.url))
        .replace("{{ .Token }}", &esc(f.token))
        .replace("{{ .Code }}", &esc(f.code.unwrap_or("")))
        .replace("{{ .Email }}", &esc(f.email))
        .replace("{{ .NewEmail }}", &esc(f.new_email.unwrap_or("")))
        .replace("{{ .SiteURL }}", &esc(&cfg.site_url))
}
