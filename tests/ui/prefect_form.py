"""Drive the Prefect UI's custom-run form for a deployment, like a person would.

Prefect 3.9 ships two UIs from one server: V2 (React, the default for a browser without a saved preference,
under /v2) and V1 (Vue, at /). Both render a deployment's parameter schema as the same tree:

    <label>Title (Optional)</label> ... <fieldset> control, or the nested properties of a model </fieldset>

so a field is found by its label text (the schema title, as the UI shows it) and its nesting depth, counted
in <fieldset> elements. Only V2 ties labels to controls (`for=`), hence the label -> fieldset walk for both.

A list parameter (`list[Model]`, `list[str]`) is a form list in both UIs, not a JSON editor: the list's
<fieldset> holds one draggable item per entry, with no label and no <fieldset> of its own, and the fields of
a model item sit directly in it (so an index does not add to the depth). V2 marks an item by its dnd-kit
drag handle (`button[aria-roledescription=sortable]`, "Drag to reorder") as a direct child; V1 by the class
`p-draggable-list__item`. A path addresses an entry by its index: `refiners.0.model`.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import quote

import httpx
from playwright.sync_api import Locator, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

UI_VERSIONS = ("v2", "v1")
SUBMIT_ATTEMPTS = 4
FINAL_STATE_TYPES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
_FLOW_RUN_URL = re.compile(r"/runs/flow-run/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")

# What a control inside a field's <fieldset> looks like in either UI.
_SELECT = "button[aria-haspopup='listbox'], button.p-select-button__control"  # V2 (radix) | V1 (prefect-design)
_SWITCH = "[role='switch'], input[type='checkbox']"
_TEXT = "textarea, input:not([type='checkbox']):not([type='search']):not([type='hidden'])"


class FormError(AssertionError):
    """The form did not look or behave as expected (a missing field, a rejected submit)."""


def api_url_for(ui_url: str) -> str:
    """The API URL the UI itself talks to (the server publishes it at /ui-settings)."""
    r = httpx.get(ui_url.rstrip("/") + "/ui-settings", timeout=10)
    r.raise_for_status()
    return r.json()["api_url"].rstrip("/")


def find_deployment(api_url: str, flow_name: str, deployment_name: str) -> dict | None:
    r = httpx.get(f"{api_url}/deployments/name/{quote(flow_name, safe='')}/{quote(deployment_name, safe='')}",
                  timeout=10)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.json()


def wait_for_deployment(api_url: str, flow_name: str, deployment_name: str, timeout_s: float) -> dict:
    """Poll until `flow.serve(...)` in another process has registered the deployment."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            dep = find_deployment(api_url, flow_name, deployment_name)
        except httpx.HTTPError:
            dep = None
        if dep is not None:
            return dep
        if time.monotonic() > deadline:
            raise TimeoutError(f"deployment {flow_name}/{deployment_name} not registered after {timeout_s:.0f}s")
        time.sleep(0.5)


def field_titles(schema: dict, path: str) -> list[str | int]:
    """Map a dotted parameter path ("refiner.model", "refiners.0.model") to what the form shows at each
    level: a field's title, or an int for the entry of a list."""
    definitions = {**schema.get("definitions", {}), **schema.get("$defs", {})}

    def resolve(node: dict) -> dict:
        # pydantic nests models as $ref, sometimes wrapped in allOf (a ref with a default) or anyOf (Optional).
        while True:
            if "$ref" in node:
                node = definitions[node["$ref"].rsplit("/", 1)[-1]]
            elif len(node.get("allOf", [])) == 1:
                node = node["allOf"][0]
            elif "anyOf" in node and "properties" not in node:
                refs = [n for n in node["anyOf"] if "$ref" in n or "properties" in n or "items" in n]
                if not refs:
                    return node
                node = refs[0]
            else:
                return node

    titles: list[str | int] = []
    node = schema
    for key in path.split("."):
        node = resolve(node)
        if node.get("type") == "array" or "items" in node:
            if not key.isdigit():
                raise FormError(f"{path!r}: {'.'.join(map(str, titles)) or 'the parameter'} is a list; "
                                f"address an entry by its index, not {key!r}")
            titles.append(int(key))
            node = node.get("items") or {}
            continue
        props = node.get("properties", {})
        if key not in props:
            raise FormError(f"{path!r}: no parameter or field {key!r} (have {sorted(props)})")
        titles.append(props[key].get("title") or key)
        node = props[key]
    return titles


def _xpath_literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


def _label_xpath(title: str, depth: int) -> str:
    # Optional fields carry a " (Optional)" suffix in both UIs; required ones show the bare title.
    t = _xpath_literal(title)
    to = _xpath_literal(f"{title} (Optional)")
    return f"xpath=.//label[normalize-space(.)={t} or normalize-space(.)={to}][count(ancestor::fieldset)={depth}]"


def _item_xpath(depth: int) -> str:
    # A list entry: V2's row around a dnd-kit drag handle, V1's draggable-list item (see the module doc).
    return ("xpath=.//*[button[@aria-roledescription='sortable' or @aria-label='Drag to reorder'] or "
            "contains(concat(' ', normalize-space(@class), ' '), ' p-draggable-list__item ')]"
            f"[count(ancestor::fieldset)={depth}]")


def field_fieldset(form: Locator, titles: list[str | int], timeout_ms: float) -> Locator:
    """The <fieldset> that holds the control (or nested fields) of the field at `titles`; for a path that
    ends in a list index, the list entry (its control, or its model's fields)."""
    scope = form
    path = ".".join(map(str, titles))
    # Depth is counted from the form, in case the page wraps the form itself in a fieldset.
    depth = form.evaluate("e => { let n = 0; for (let p = e; p; p = p.parentElement) "
                          "if (p.tagName === 'FIELDSET') n++; return n; }")
    for level, title in enumerate(titles):
        if isinstance(title, int):
            items = scope.locator(_item_xpath(depth))
            try:
                items.nth(title).wait_for(state="visible", timeout=timeout_ms)
            except PlaywrightTimeout:
                raise FormError(f"{path}: the list shows {items.count()} entries, no entry {title}") from None
            scope = items.nth(title)
            continue
        label = scope.locator(_label_xpath(title, depth))
        try:
            label.first.wait_for(state="visible", timeout=timeout_ms)
        except PlaywrightTimeout:
            raise FormError(f"no form field labelled {title!r} at depth {level} (path {path})") from None
        if label.count() > 1:
            raise FormError(f"{label.count()} fields labelled {title!r} at depth {level}; the path is ambiguous")
        # The field's container is the label's nearest ancestor holding a fieldset; its first fieldset is ours.
        scope = label.locator("xpath=ancestor::*[.//fieldset][1]").locator("xpath=(.//fieldset)[1]")
        depth += 1
    return scope


def _choose_option(page: Page, trigger: Locator, value: str, what: str, timeout_ms: float) -> None:
    options = page.get_by_role("option")
    wanted = page.get_by_role("option", name=value, exact=True)
    # Keyboard first: V1's select ignores a synthetic mouse click (its outside-click handler closes the
    # popover at once); Space on the focused trigger opens it in both UIs, as for a person tabbing through.
    trigger.focus()
    page.keyboard.press("Space")
    try:
        options.first.wait_for(state="visible", timeout=1500)
    except PlaywrightTimeout:
        trigger.click()
    # Wait for the option itself, not any option: a popover that is still closing can show old ones.
    try:
        wanted.first.wait_for(state="visible", timeout=min(timeout_ms, 10_000))
    except PlaywrightTimeout:
        shown = options.all_inner_texts()
        page.keyboard.press("Escape")
        raise FormError(f"{what}: no option {value!r}; the form offers {shown}") from None
    wanted.first.click()
    try:
        page.wait_for_function("([el, v]) => el.textContent.trim() === v", arg=[trigger.element_handle(), value],
                               timeout=timeout_ms)
    except PlaywrightTimeout:
        raise FormError(f"{what}: picked {value!r} but the select shows {trigger.inner_text()!r}") from None
    try:  # the popover is gone before the next field is touched
        options.first.wait_for(state="detached", timeout=timeout_ms)
    except PlaywrightTimeout:
        raise FormError(f"{what}: the options popover stayed open after picking {value!r}") from None


def field_value(fieldset: Locator) -> str | None:
    """What the field shows now: the select's choice, "true"/"false" for a switch, or the text typed."""
    select = fieldset.locator(_SELECT)
    if select.count():
        return select.first.inner_text().strip()
    switch = fieldset.locator(_SWITCH)
    if switch.count():
        control = switch.first
        if control.get_attribute("role") == "switch":
            return str(control.get_attribute("aria-checked") == "true").lower()
        return str(control.is_checked()).lower()
    text = fieldset.locator(_TEXT)
    return text.first.input_value() if text.count() else None


def _same(shown: str | None, value: str) -> bool:
    if shown is not None and value.strip().lower() in {"true", "false", "1", "0", "yes", "no", "on", "off"} \
            and shown in {"true", "false"}:
        return (shown == "true") == (value.strip().lower() in {"true", "1", "yes", "on"})
    return shown == value


def fill_field(page: Page, fieldset: Locator, value: str, what: str, timeout_ms: float) -> None:
    select = fieldset.locator(_SELECT)
    switch = fieldset.locator(_SWITCH)
    text = fieldset.locator(_TEXT)
    if select.count():
        _choose_option(page, select.first, value, what, timeout_ms)
    elif switch.count():
        want = value.strip().lower() in {"true", "1", "yes", "on"}
        control = switch.first
        checked = (control.get_attribute("aria-checked") == "true") if control.get_attribute("role") == "switch" \
            else control.is_checked()
        if checked != want:
            control.click()
    elif text.count():
        control = text.first
        control.fill(value)
        if control.input_value() != value:
            raise FormError(f"{what}: typed {value!r} but the field holds {control.input_value()!r}")
    else:
        raise FormError(f"{what}: no input, select or switch in this field "
                        f"(nested fields and list entries need a dotted path to a leaf: refiners.0.model)")
    # Let the form commit the value (both UIs update on input/blur).
    page.keyboard.press("Tab")


def deployment_page_url(ui_url: str, deployment_id: str, ui_version: str = "v2") -> str:
    if ui_version not in UI_VERSIONS:
        raise ValueError(f"ui_version must be one of {UI_VERSIONS}")
    prefix = "/v2" if ui_version == "v2" else ""
    return f"{ui_url.rstrip('/')}{prefix}/deployments/deployment/{deployment_id}"


def run_deployment_from_form(page: Page, ui_url: str, flow_name: str, deployment_name: str,
                             fills: dict[str, str], timeout_s: float = 60, *, ui_version: str = "v2",
                             screenshot_dir: Path | None = None) -> str:
    """Open the deployment in the UI, Run -> Custom run, fill `fills`, submit; return the new flow run's id.

    `fills` maps dotted parameter paths to the text a person would enter or the option they would pick:
    {"refiner.model": "qwen", "split": "test"}. Nested model fields are addressed through their parameter.
    """
    timeout_ms = timeout_s * 1000
    api_url = api_url_for(ui_url)
    deployment = find_deployment(api_url, flow_name, deployment_name)
    if deployment is None:
        raise FormError(f"no deployment {flow_name}/{deployment_name} on {api_url}")
    schema = deployment.get("parameter_openapi_schema") or {}
    targets = {path: field_titles(schema, path) for path in fills}

    def snap(name: str, full_page: bool = False) -> None:
        if screenshot_dir is not None:
            Path(screenshot_dir).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(screenshot_dir) / f"{ui_version}-{name}.png"), full_page=full_page)

    page.goto(deployment_page_url(ui_url, deployment["id"], ui_version), wait_until="domcontentloaded",
              timeout=timeout_ms)
    # The page has loaded the deployment once its name shows (breadcrumb / header).
    page.get_by_text(deployment_name, exact=True).first.wait_for(state="visible", timeout=timeout_ms)
    snap("deployment")

    # "Run" is a menu button; "Runs" in the side bar would match a non-exact name.
    page.get_by_role("button", name="Run", exact=True).click(timeout=timeout_ms)
    custom = page.get_by_role("menuitem", name="Custom run").or_(page.get_by_role("button", name="Custom run"))
    custom.first.click(timeout=timeout_ms)
    page.wait_for_url(re.compile(r"/deployments/deployment/[^/]+/run"), timeout=timeout_ms)

    form = page.locator("form").filter(has=page.get_by_role("button", name="Submit"))
    form.first.wait_for(state="visible", timeout=timeout_ms)
    form = form.first
    fieldsets = {}
    for path, value in fills.items():
        fieldsets[path] = field_fieldset(form, targets[path], timeout_ms)
        fill_field(page, fieldsets[path], str(value), path, timeout_ms)
    # Read everything back before submitting: a form that re-initialises late (defaults arriving after the
    # first render) would silently drop what was typed. Refill once, then give up loudly.
    for path, value in fills.items():
        if not _same(field_value(fieldsets[path]), str(value)):
            fill_field(page, fieldsets[path], str(value), path, timeout_ms)
            if not _same(shown := field_value(fieldsets[path]), str(value)):
                raise FormError(f"{path}: the form shows {shown!r} instead of {value!r} before submitting")
    snap("form-filled", full_page=True)  # a long form (a list of models) does not fit the viewport

    # Both UIs go back to the deployment page after a submit and announce the run in a toast with a
    # "View run" button (V1's toast lives 5 s). The create call's response names the run as well: keep
    # it to check the page we land on, and to get there should the toast be gone already.
    def is_create(response) -> bool:
        return response.request.method == "POST" and response.url.rstrip("/").endswith("/create_flow_run")

    for attempt in range(1, SUBMIT_ATTEMPTS + 1):
        with page.expect_response(is_create, timeout=timeout_ms) as created:
            form.get_by_role("button", name="Submit").click(timeout=timeout_ms)
        response = created.value
        # 503 is Prefect's "retry me" (SQLite busy on a loaded machine): the Python client retries it, the
        # UI shows "Something went wrong" and keeps the form filled, so a person would press Submit again.
        if response.status != 503 or attempt == SUBMIT_ATTEMPTS:
            break
        page.wait_for_timeout(1000 * attempt)
    if not response.ok:
        snap("submit-failed")
        raise FormError(f"the server refused the run ({response.status}, attempt {attempt}): "
                        f"{response.text()[:1000]}")
    created_id = response.json()["id"]

    # V1 mounts its toast app twice; only the last copy is on top and takes the click.
    view_run = page.get_by_role("link", name="View run").or_(page.get_by_role("button", name="View run"))
    try:
        view_run.last.click(timeout=min(timeout_ms, 10_000))
    except PlaywrightTimeout:
        prefix = "/v2" if ui_version == "v2" else ""
        page.goto(f"{ui_url.rstrip('/')}{prefix}/runs/flow-run/{created_id}", timeout=timeout_ms)
    try:
        page.wait_for_url(_FLOW_RUN_URL, timeout=timeout_ms)
    except PlaywrightTimeout:
        snap("no-flow-run-page")
        raise FormError(f"submitting did not lead to a flow run page (still at {page.url})") from None
    run_id = _FLOW_RUN_URL.search(page.url).group(1)
    if run_id != created_id:
        raise FormError(f"the UI opened flow run {run_id}, but the server created {created_id}")
    if screenshot_dir is not None:
        try:  # let the run page render before the screenshot; the id is settled either way
            page.wait_for_load_state("networkidle", timeout=10_000)
        except PlaywrightTimeout:
            pass
        snap("flow-run")
    return run_id


def flow_run_url(ui_url: str, run_id: str, ui_version: str = "v2") -> str:
    if ui_version not in UI_VERSIONS:
        raise ValueError(f"ui_version must be one of {UI_VERSIONS}")
    prefix = "/v2" if ui_version == "v2" else ""
    return f"{ui_url.rstrip('/')}{prefix}/runs/flow-run/{run_id}"


def open_flow_run_tab(page: Page, ui_url: str, run_id: str, tab: str, ui_version: str = "v2",
                      timeout_s: float = 60) -> Locator:
    """Open a flow run's page on one of its tabs (Logs, Artifacts, Parameters...); return the tab's panel."""
    timeout_ms = timeout_s * 1000
    page.goto(flow_run_url(ui_url, run_id, ui_version), wait_until="domcontentloaded", timeout=timeout_ms)
    # V2's tabs are role=tab (radix); V1's are <li class="p-tab"> in a role=tablist, with no role of their own.
    trigger = page.get_by_role("tab", name=tab, exact=True).or_(
        page.get_by_role("tablist").get_by_text(tab, exact=True))
    trigger.first.click(timeout=timeout_ms)
    # Both UIs put the tab in the URL (?tab=Artifacts) and show one visible tabpanel (V2 hides the others).
    page.wait_for_url(re.compile(rf"[?&]tab={re.escape(tab)}\b"), timeout=timeout_ms)
    panel = page.get_by_role("tabpanel").filter(visible=True)
    panel.first.wait_for(state="visible", timeout=timeout_ms)
    return panel.first


def wait_for_flow_run(api_url: str, run_id: str, timeout_s: float = 120) -> str:
    """Poll the REST API until the flow run reaches a final state; return that state's name."""
    deadline = time.monotonic() + timeout_s
    state = None
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=10) as client:
        while time.monotonic() < deadline:
            r = client.get(f"/flow_runs/{run_id}")
            r.raise_for_status()
            state = r.json().get("state") or {}
            if state.get("type") in FINAL_STATE_TYPES:
                return state.get("name") or state["type"].title()
            time.sleep(0.5)
    raise TimeoutError(f"flow run {run_id} not finished after {timeout_s:.0f}s (last state {state})")
