//! The dashboard's static files, compiled into the binary so that it works offline and from a
//! single file. Vendored scripts, their versions and licences: `src/web/assets/VENDORED.md`.

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// Every file served under `/app/assets/`.
pub const ALL: [Asset; 4] = [
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/htmx.min.js"),
    },
    Asset {
        name: "sse.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/sse.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/app.js"),
    },
];

/// The embedded file with this name.
pub fn find(name: &str) -> Option<&'static Asset> {
    ALL.iter().find(|a| a.name == name)
}

/// A short fingerprint of all assets, put in their URLs so browsers may cache them for good.
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        ALL.iter().for_each(|a| hash.update(a.body));
        hex::encode(&hash.finalize()[..6])
    })
}
