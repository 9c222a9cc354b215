//! Card `detail` as an EHR shows it: CommonMark with GitHub tables and strikethrough, rendered to
//! HTML on the server so the playground page needs no Markdown library. Card text is rule output
//! (and may quote the record), so nothing in it becomes markup it did not ask for: raw HTML is shown
//! as text, and links and images keep only `http`, `https` and `mailto` targets (an image becomes a
//! link to it; EHRs rarely show images, and a page fetching them would leak where it looked).

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};

/// Whether a link target may be followed from the page: web and mail addresses, and fragments.
fn safe_target(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    ["https://", "http://", "mailto:", "#"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

fn target(url: CowStr<'_>) -> CowStr<'_> {
    if safe_target(&url) {
        url
    } else {
        CowStr::Borrowed("#")
    }
}

/// `markdown` as sanitized HTML.
pub fn to_html(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let events = Parser::new_ext(markdown, options).map(|event| match event {
        // Raw HTML is shown as the text it is.
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        // An image becomes a link to it: a card's detail loads nothing by itself.
        Event::Start(
            Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }
            | Tag::Image {
                link_type,
                dest_url,
                title,
                id,
            },
        ) => Event::Start(Tag::Link {
            link_type,
            dest_url: target(dest_url),
            title,
            id,
        }),
        Event::End(TagEnd::Image) => Event::End(TagEnd::Link),
        other => other,
    });
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

#[cfg(test)]
mod tests {
    use super::to_html;

    #[test]
    fn renders_tables_emphasis_and_links() {
        let html = to_html(
            "**Potassium** 6.1 mmol/L\n\n| Drug | Date |\n|---|---|\n| lisinopril | 2026-10-02 |\n\n[KDIGO](https://kdigo.org)",
        );
        assert!(html.contains("<strong>Potassium</strong>"), "{html}");
        assert!(
            html.contains("<table>") && html.contains("<td>lisinopril</td>"),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="https://kdigo.org">KDIGO</a>"#),
            "{html}"
        );
    }

    #[test]
    fn raw_html_and_script_links_are_not_markup() {
        let html = to_html(
            "<script>alert(1)</script>\n\nSee <b>this</b> and [x](javascript:alert(1)) ![i](data:image/png;base64,AA)",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("&lt;b&gt;this&lt;/b&gt;"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("data:image"), "{html}");
        assert!(!html.contains("<img"), "{html}");
    }
}
