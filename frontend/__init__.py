"""The browser side of NextFrame: the dashboard and the playground (ARCHITECTURE.md, docs/dashboard.md).

Server-rendered Django templates and static assets, no build step. What lives here:
- `accounts`: one-time sign-in links, optional sign-up, the password page;
- `dashboard`: the dashboard's pages (/dashboard/...), the organisation switch; django-axes' lockout
  page (`login_locked_out`, named by the AXES_LOCKOUT_CALLABLE setting);
- `dashboard_api`: the dashboard's JSON endpoints for keys and members (/dashboard/api/...);
- `context`: every page's header (organisations, role, sections);
- `templates/frontend/`: the pages (found through the app's template folder, APP_DIRS), all on
  `base.html` (blocks title, head, content, scripts; body for the whole page);
- `static/frontend/`: app.css, js/api.js (the fetch helper with the CSRF token), js/dashboard/;
- `urls`: /dashboard/..., /accounts/..., and the root redirect.

How it plugs in: `frontend` is in INSTALLED_APPS (`FrontendConfig`) and `nextframe.urls` includes
`frontend.urls` at the site root. Pages call the public REST API (/v1/) with the session and its
CSRF token, and the WebSocket with a ticket (docs/protocol.md): the frontend owns no data of its own
(sign-in links and memberships are tenancy's: nextframe.tenancy.members).
"""
