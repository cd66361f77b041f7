//! One builder per owned object, rendered from the handlebars templates in templates/.
