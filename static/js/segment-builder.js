// The segment builder: edits a rule tree (see segments/rules.py and docs/segments.md) as nested
// groups and conditions, keeps it in the form's JSON field, and shows a live count and a sample
// of the matching contacts as the rules change. Without this script the JSON field is the editor.
(() => {
  "use strict";

  const mount = document.getElementById("segment-builder");
  if (!mount) return;

  const form = mount.closest("form");
  const textarea = form.querySelector("textarea[name='rules']");
  const jsonDetails = form.querySelector("details.rules-json");
  const layout = form.querySelector(".builder-layout");
  const staticNote = form.querySelector(".static-note");
  const previewBox = document.getElementById("segment-preview");
  const countOut = previewBox.querySelector("[data-testid='live-count']");
  const unitOut = previewBox.querySelector(".preview-unit");
  const statusOut = previewBox.querySelector("[data-testid='preview-status']");
  const sampleOut = previewBox.querySelector("[data-testid='preview-sample']");
  const catalogue = readJSON("builder-catalogue");
  const templates = readJSON("builder-templates") || [];
  const serverErrors = readJSON("builder-errors") || [];
  const csrfInput = form.querySelector("input[name='csrfmiddlewaretoken']");
  const previewUrl = mount.dataset.previewUrl;
  const contactsUrl = mount.dataset.contactsUrl;
  const segmentId = mount.dataset.segmentId ? Number(mount.dataset.segmentId) : null;

  const GROUP_KEYS = ["all", "any", "not"];
  const GROUP_LABELS = { all: "ALL of these", any: "ANY of these", not: "NONE of these" };
  const GROUP_WORDS = { all: "and", any: "or", not: "nor" };
  const MAX_DEPTH = catalogue.limits.depth;
  const MAX_CONDITIONS = catalogue.limits.conditions;
  const COUNT_OPS = ["at_least", "at_most", "exactly"];
  const NUMBER_OPS = ["eq", "neq", "gt", "gte", "lt", "lte", "between"];
  const ENGAGEMENT_LABELS = { opened: "opened a message", clicked: "clicked a message", any: "opened or clicked a message" };
  const AGGREGATE_LABELS = { sum: "total", avg: "average", min: "smallest", max: "largest" };
  const RFM_LABELS = { recency: "Recency score", frequency: "Frequency score", monetary: "Monetary score" };
  const CONSENT_LABELS = { granted: "granted", withdrawn: "withdrawn", pending: "pending confirmation", never_asked: "never asked" };
  const PREVIEW_DELAY_MS = 300;

  const entries = new Map();
  for (const entry of catalogue.fields) entries.set(entryKey(entry), entry);
  const countryOptions = catalogue.countries;
  const countryNames = new Map(countryOptions);
  const numberFormat = new Intl.NumberFormat();

  let tree = null;
  let jsonBroken = false;
  let lastErrors = serverErrors;
  let uid = 0;

  // --- small helpers ----------------------------------------------------------------------------
  function readJSON(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (["value", "checked", "hidden", "disabled"].includes(name)) node[name] = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function word(text) {
    return el("span", { class: "sb-word", text });
  }

  function join(path, part) {
    return path === "" ? String(part) : `${path}.${part}`;
  }

  function label(text) {
    return String(text).replace(/_/g, " ");
  }

  function opLabel(op) {
    return catalogue.op_labels[op] || label(op);
  }

  function entryKey(node) {
    if (node.type === "field") return `field:${node.field}`;
    if (node.type === "attribute") return `attribute:${node.key}`;
    return node.type || "";
  }

  function groupKey(node) {
    return GROUP_KEYS.find((key) => node && Object.prototype.hasOwnProperty.call(node, key)) || null;
  }

  function isGroup(node) {
    const key = groupKey(node);
    return key !== null && Object.keys(node).length === 1 && Array.isArray(node[key]);
  }

  function isPlainObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function countConditions(node) {
    if (isGroup(node)) return node[groupKey(node)].reduce((sum, child) => sum + countConditions(child), 0);
    return 1;
  }

  function valueShape(op) {
    if (["is_set", "not_set", "is_true", "is_false"].includes(op)) return "none";
    if (["within_last", "more_than_days_ago", "anniversary_within"].includes(op)) return "days";
    if (["in", "not_in", "contains_any", "contains_all", "contains_none"].includes(op)) return "list";
    if (op === "between") return "pair";
    return "scalar";
  }

  function today(offsetDays = 0) {
    const day = new Date(Date.now() + offsetDays * 86400000);
    return day.toISOString().slice(0, 10);
  }

  function replaceContents(target, source) {
    for (const key of Object.keys(target)) delete target[key];
    Object.assign(target, source);
  }

  // --- defaults for a newly picked condition ---------------------------------------------------------
  const DEFAULT_OPS = {
    country: "in", choice: "eq", tags: "contains_any", number: "gte", age: "between", date: "within_last",
    datetime: "within_last", boolean: "is_true", text: "eq",
  };

  function emptyScalar(valueType, entry) {
    if (valueType === "choice") return entry && entry.choices.length ? entry.choices[0][0] : "";
    if (["number", "age"].includes(valueType)) return null;
    return "";
  }

  function emptyValue(valueType, op, entry) {
    switch (valueShape(op)) {
      case "none": return undefined;
      case "days": return 30;
      case "list": return [];
      case "pair": return valueType === "age" ? [25, 34] : [emptyScalar(valueType, entry), emptyScalar(valueType, entry)];
      default: return emptyScalar(valueType, entry);
    }
  }

  function defaults(entry) {
    const firstEvent = catalogue.event_names[0] || "";
    const otherSegments = catalogue.segments.filter((s) => s.id !== segmentId);
    switch (entry.type) {
      case "field":
      case "attribute": {
        const op = entry.ops.includes(DEFAULT_OPS[entry.value_type]) ? DEFAULT_OPS[entry.value_type] : entry.ops[0];
        const node = entry.type === "field"
          ? { type: "field", field: entry.field, op }
          : { type: "attribute", key: entry.key, op };
        const value = emptyValue(entry.value_type, op, entry);
        if (value !== undefined) node.value = value;
        return node;
      }
      case "lifecycle_change": return { type: "lifecycle_change", stage: "lead", within_days: 30 };
      case "consent":
        return { type: "consent", channel: "email", purpose: catalogue.purposes[0] || "", status: "granted" };
      case "suppression": return { type: "suppression", channel: "email", suppressed: false };
      case "event": return { type: "event", name: firstEvent, op: "performed", window: { within_days: 30 } };
      case "event_aggregate":
        return {
          type: "event_aggregate", name: catalogue.event_names.includes("purchase") ? "purchase" : firstEvent,
          fn: "sum", property: "revenue", op: "gte", value: 100, window: { within_days: 90 },
        };
      case "engagement": return { type: "engagement", action: "any", op: "performed", window: { within_days: 30 } };
      case "rfm": return { type: "rfm", score: "recency", op: "gte", value: 4 };
      case "rfm_group": return { type: "rfm_group", op: "in", value: ["champions"] };
      case "segment": return { type: "segment", op: "in", segment: otherSegments.length ? otherSegments[0].id : null };
      default: return { type: entry.type };
    }
  }

  // Keep what can be kept when the operator changes shape (a value → a list of one, ...).
  function adaptValue(node, valueType, entry, oldOp, newOp) {
    const oldShape = valueShape(oldOp);
    const newShape = valueShape(newOp);
    if (oldShape === newShape) return;
    const previous = node.value;
    delete node.value;
    const usable = oldShape !== "days" && oldShape !== "none";
    switch (newShape) {
      case "none": return;
      case "days": node.value = 30; return;
      case "list":
        node.value = !usable || previous === null || previous === undefined || previous === ""
          ? [] : (Array.isArray(previous) ? previous.filter((v) => v !== null && v !== "") : [previous]);
        return;
      case "pair":
        node.value = usable && previous !== undefined && previous !== ""
          ? (Array.isArray(previous) ? [previous[0] ?? null, previous[1] ?? null] : [previous, previous])
          : emptyValue(valueType, newOp, entry);
        return;
      default:
        node.value = usable && previous !== undefined
          ? (Array.isArray(previous) ? (previous[0] ?? emptyScalar(valueType, entry)) : previous)
          : emptyScalar(valueType, entry);
    }
  }

  // --- controls ---------------------------------------------------------------------------------------
  function keyOf(path, part) {
    return `${path}|${part}`;
  }

  function selectControl({ options, value, onChange, ariaLabel, path, part, placeholder }) {
    const select = el("select", { "aria-label": ariaLabel, "data-key": keyOf(path, part), "data-part": part });
    const known = new Set();
    if (placeholder) select.append(el("option", { value: "", text: placeholder }));
    const addOption = (parent, [optionValue, optionLabel]) => {
      known.add(String(optionValue));
      parent.append(el("option", { value: String(optionValue), text: optionLabel }));
    };
    for (const option of options) {
      if (option.group) {
        const optgroup = el("optgroup", { label: option.group });
        option.options.forEach((inner) => addOption(optgroup, inner));
        if (optgroup.children.length) select.append(optgroup);
      } else {
        addOption(select, option);
      }
    }
    const current = value === null || value === undefined ? "" : String(value);
    if (current !== "" && !known.has(current)) {
      select.append(el("option", { value: current, text: `${current} (unknown)` }));
    }
    select.value = current;
    select.addEventListener("change", () => onChange(select.value));
    return select;
  }

  function textControl({ value, onInput, ariaLabel, path, part, type = "text", list, attrs = {} }) {
    const input = el("input", {
      type, "aria-label": ariaLabel, "data-key": keyOf(path, part), "data-part": part, list, ...attrs,
    });
    input.value = value === null || value === undefined ? "" : String(value);
    input.addEventListener("input", () => onInput(input.value, input));
    return input;
  }

  function numberControl({ value, onValue, ariaLabel, path, part, attrs = {} }) {
    return textControl({
      value, ariaLabel, path, part, type: "number", attrs: { step: "any", inputmode: "decimal", ...attrs },
      onInput: (raw) => {
        const number = raw.trim() === "" ? null : Number(raw);
        onValue(Number.isFinite(number) ? number : null);
      },
    });
  }

  // A list of values as chips, typed (Enter or comma adds one) or picked from a select. The widget
  // redraws only its chips, so a value committed on blur never replaces the button being clicked.
  function chipWidget({ values, onChange, path, part, labelOf, input }) {
    const current = [...values];
    const wrapper = el("div", { class: "sb-tags", "data-part": part });
    const chips = el("ul", { class: "sb-chips", "aria-label": "Chosen values" });
    const draw = () => {
      chips.replaceChildren(...current.map((value, index) => el("li", { class: "chip" },
        el("span", { text: labelOf(value) }),
        el("button", {
          type: "button", class: "sb-chip-remove", "aria-label": `Remove ${labelOf(value)}`,
          onclick: () => { current.splice(index, 1); draw(); onChange([...current]); input.focus(); },
        }, "×"),
      )));
    };
    const add = (items) => {
      let added = false;
      for (const item of items) {
        if (item === "" || item === null || current.includes(item)) continue;
        current.push(item);
        added = true;
      }
      if (added) {
        draw();
        onChange([...current]);
      }
    };
    const removeLast = () => {
      if (!current.length) return;
      current.pop();
      draw();
      onChange([...current]);
    };
    draw();
    wrapper.append(chips, input);
    return { wrapper, add, removeLast };
  }

  function tagInput({ values, onChange, ariaLabel, path, part, coerce = (v) => v }) {
    const input = el("input", { type: "text", "aria-label": ariaLabel, placeholder: "type, then Enter", "data-key": keyOf(path, part) });
    const widget = chipWidget({ values, onChange, path, part, input, labelOf: (v) => String(v) });
    const commit = () => {
      const items = input.value.split(",").map((v) => v.trim()).filter(Boolean).map(coerce);
      input.value = "";
      widget.add(items);
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === ",") {
        event.preventDefault();
        commit();
      } else if (event.key === "Backspace" && input.value === "") {
        widget.removeLast();
      }
    });
    input.addEventListener("change", commit);
    return widget.wrapper;
  }

  function countryList({ values, onChange, path, part }) {
    const select = selectControl({
      options: countryOptions, value: "", ariaLabel: "Add a country", placeholder: "Add a country…", path,
      part: `${part}.add`, onChange: (code) => { select.value = ""; widget.add([code]); },
    });
    const labelOf = (code) => `${countryNames.get(String(code).toUpperCase()) || code} (${code})`;
    const widget = chipWidget({ values, onChange, path, part, input: select, labelOf });
    return widget.wrapper;
  }

  function checkboxList({ options, values, onChange, path, part, ariaLabel }) {
    const wrapper = el("fieldset", { class: "sb-checks", "data-part": part }, el("legend", { class: "visually-hidden", text: ariaLabel }));
    for (const [code, text] of options) {
      const box = el("input", { type: "checkbox", value: code, checked: values.includes(code), "data-key": keyOf(path, `${part}.${code}`) });
      box.addEventListener("change", () => {
        const ticked = [...wrapper.querySelectorAll("input:checked")].map((input) => input.value);
        onChange(options.map(([c]) => c).filter((c) => ticked.includes(c)), false);
      });
      wrapper.append(el("label", {}, box, ` ${text}`));
    }
    return wrapper;
  }

  function scalarControl(valueType, entry, value, set, path, part) {
    if (valueType === "country") {
      return selectControl({
        options: countryOptions, value: value ? String(value).toUpperCase() : "", ariaLabel: "Value",
        placeholder: "Choose a country…", path, part, onChange: (code) => set(code, false),
      });
    }
    if (valueType === "choice") {
      return selectControl({ options: entry.choices, value, ariaLabel: "Value", path, part, onChange: (v) => set(v, false) });
    }
    if (valueType === "number" || valueType === "age") {
      return numberControl({ value, ariaLabel: "Value", path, part, onValue: (v) => set(v, false) });
    }
    if (valueType === "date" || valueType === "datetime") {
      return textControl({ value, type: "date", ariaLabel: "Date", path, part, onInput: (v) => set(v, false) });
    }
    if (valueType === "property") {
      return textControl({ value, ariaLabel: "Value", path, part, onInput: (v) => set(propertyValue(v), false) });
    }
    return textControl({ value, ariaLabel: "Value", path, part, onInput: (v) => set(v, false) });
  }

  // An event property's value: a number or yes/no when it reads as one, else text.
  function propertyValue(raw) {
    const text = raw.trim();
    if (text === "true" || text === "false") return text === "true";
    if (text !== "" && String(Number(text)) === text) return Number(text);
    return raw;
  }

  // The value of a condition for its operator: nothing, days, one value, a list, or a pair.
  function valueControl(node, valueType, entry, path, part = "value") {
    const shape = valueShape(node.op);
    const set = (value, rerender = false) => { node.value = value; changed({ rerender }); };
    if (shape === "none") return null;
    if (shape === "days") {
      return el("span", { class: "sb-inline" },
        numberControl({ value: node.value, ariaLabel: "Days", path, part, attrs: { min: 1, step: 1 }, onValue: (v) => set(v, false) }),
        word("days"));
    }
    if (shape === "list") {
      const values = Array.isArray(node.value) ? node.value : [];
      if (valueType === "country") return countryList({ values, onChange: set, path, part });
      if (valueType === "choice") {
        return checkboxList({ options: entry.choices, values, onChange: set, path, part, ariaLabel: "Values" });
      }
      const coerce = valueType === "number" ? (v) => (Number.isFinite(Number(v)) ? Number(v) : v)
        : valueType === "property" ? propertyValue : (v) => v;
      return tagInput({ values, onChange: set, ariaLabel: "Add a value", path, part, coerce });
    }
    if (shape === "pair") {
      const pair = Array.isArray(node.value) ? node.value : [null, null];
      const setAt = (index) => (value, rerender) => {
        const next = [...pair];
        next[index] = value;
        node.value = next;
        changed({ rerender });
      };
      return el("span", { class: "sb-inline" },
        scalarControl(valueType, entry, pair[0], setAt(0), path, `${part}.0`),
        word("and"),
        scalarControl(valueType, entry, pair[1], setAt(1), path, `${part}.1`));
    }
    return scalarControl(valueType, entry, node.value, set, path, part);
  }

  function opControl(node, ops, path, valueType, entry, labels = {}) {
    return selectControl({
      options: ops.map((op) => [op, labels[op] || opLabel(op)]), value: node.op, ariaLabel: "Operator", path, part: "op",
      onChange: (op) => {
        const old = node.op;
        node.op = op;
        if (valueType) adaptValue(node, valueType, entry, old, op);
        changed({ rerender: true });
      },
    });
  }

  // "ever", "in the last N days" or "between two dates", for events and engagement.
  function windowControl(node, path) {
    const mode = !node.window ? "ever" : ("within_days" in node.window ? "within" : "between");
    const parts = [selectControl({
      options: [["ever", "ever"], ["within", "in the last"], ["between", "between"]], value: mode, ariaLabel: "When",
      path, part: "window",
      onChange: (next) => {
        if (next === "ever") delete node.window;
        else if (next === "within") node.window = { within_days: 30 };
        else node.window = { between: [today(-30), today()] };
        changed({ rerender: true });
      },
    })];
    if (mode === "within") {
      parts.push(numberControl({
        value: node.window.within_days, ariaLabel: "Days", path, part: "window.within_days", attrs: { min: 1, step: 1 },
        onValue: (v) => { node.window.within_days = v; changed(); },
      }), word("days"));
    } else if (mode === "between") {
      const pair = Array.isArray(node.window.between) ? node.window.between : ["", ""];
      node.window.between = pair;
      parts.push(
        textControl({ value: pair[0], type: "date", ariaLabel: "From", path, part: "window.between.0", onInput: (v) => { pair[0] = v; changed(); } }),
        word("and"),
        textControl({ value: pair[1], type: "date", ariaLabel: "To", path, part: "window.between.1", onInput: (v) => { pair[1] = v; changed(); } }),
      );
    }
    return el("span", { class: "sb-inline" }, parts);
  }

  function datalist(values) {
    const id = `sb-list-${++uid}`;
    const node = el("datalist", { id });
    const fill = (items) => node.replaceChildren(...items.map((value) => el("option", { value })));
    fill(values);
    return { id, node, fill };
  }

  function eventProperties(name, extra = []) {
    const own = catalogue.event_properties[name] || [];
    return [...extra, ...own.filter((p) => !extra.includes(p))];
  }

  // The event's name, from the tenant's own event names; the property suggestions follow it.
  function eventNameControl(node, path, names, propertyLists) {
    return textControl({
      value: node.name, ariaLabel: "Event", path, part: "name", list: names.id,
      attrs: { placeholder: "event name", class: "sb-event" },
      onInput: (value) => {
        node.name = value.trim();
        for (const [list, extra] of propertyLists) list.fill(eventProperties(node.name, extra));
        changed();
      },
    });
  }

  // Filters on the event's properties: purchase where category = shoes.
  function whereControl(node, path, props) {
    const filters = Array.isArray(node.where) ? node.where : [];
    const rows = filters.map((filter, index) => {
      const part = `where.${index}`;
      return el("div", { class: "sb-where-row", "data-part": part },
        word(index === 0 ? "where" : "and"),
        textControl({
          value: filter.property, ariaLabel: "Property", path, part: `${part}.property`, list: props.id,
          attrs: { placeholder: "property" },
          onInput: (value) => { filter.property = value.trim(); changed(); },
        }),
        selectControl({
          options: catalogue.property_ops.map((op) => [op, opLabel(op)]), value: filter.op, ariaLabel: "Property operator",
          path, part: `${part}.op`,
          onChange: (op) => {
            const old = filter.op;
            filter.op = op;
            adaptValue(filter, "property", null, old, op);
            if (["gt", "gte", "lt", "lte"].includes(op) && typeof filter.value !== "number") filter.value = null;
            changed({ rerender: true });
          },
        }),
        ["gt", "gte", "lt", "lte"].includes(filter.op)
          ? numberControl({ value: filter.value, ariaLabel: "Property value", path, part: `${part}.value`, onValue: (v) => { filter.value = v; changed(); } })
          : valueControl(filter, "property", null, path, `${part}.value`),
        el("button", {
          type: "button", class: "sb-remove outline secondary", "aria-label": "Remove property filter",
          "data-key": keyOf(path, `${part}.remove`),
          onclick: () => {
            filters.splice(index, 1);
            if (!filters.length) delete node.where;
            changed({ rerender: true, structural: true });
          },
        }, "×"),
      );
    });
    const add = el("button", {
      type: "button", class: "sb-add outline secondary", "data-key": keyOf(path, "where.add"),
      onclick: () => {
        node.where = [...filters, { property: "", op: "eq", value: "" }];
        changed({ rerender: true, structural: true });
      },
    }, "+ Property filter");
    return el("div", { class: "sb-where", "data-part": "where" }, rows, filters.length < 10 ? add : null);
  }

  // --- the tree ---------------------------------------------------------------------------------------
  function renderNode(node, path, siblings, index, depth) {
    if (isGroup(node)) return renderGroup(node, path, siblings, index, depth);
    return renderCondition(node, path, siblings, index);
  }

  function renderGroup(node, path, siblings, index, depth) {
    const key = groupKey(node);
    const children = node[key];
    const box = el("fieldset", { class: `sb-group sb-group-${key}`, "data-path": path, "data-testid": "rule-group" });
    const head = el("div", { class: "sb-group-head" },
      word(depth === 1 ? "Contacts who match" : "Match"),
      selectControl({
        options: GROUP_KEYS.map((k) => [k, GROUP_LABELS[k]]), value: key, ariaLabel: "Match", path, part: "mode",
        onChange: (next) => {
          if (next === key) return;
          node[next] = node[key];
          delete node[key];
          changed({ rerender: true, structural: true });
        },
      }),
      siblings ? el("button", {
        type: "button", class: "sb-remove outline secondary", "aria-label": "Remove group", "data-key": keyOf(path, "remove"),
        onclick: () => { siblings.splice(index, 1); changed({ rerender: true, structural: true }); },
      }, "Remove group") : null,
    );
    const list = el("ol", { class: "sb-children", "data-word": GROUP_WORDS[key] });
    children.forEach((child, i) => {
      list.append(el("li", {}, renderNode(child, join(join(path, key), i), children, i, depth + 1)));
    });
    if (!children.length) {
      list.append(el("li", { class: "sb-empty muted" }, depth === 1 ? "No conditions yet: every contact matches." : "This group is empty."));
    }
    const full = countConditions(tree) >= MAX_CONDITIONS;
    const foot = el("div", { class: "sb-group-foot" },
      el("button", {
        type: "button", class: "sb-add secondary", "data-testid": "add-condition", "data-key": keyOf(path, "add-condition"),
        disabled: full, onclick: () => { children.push({}); changed({ rerender: true, structural: true, focus: join(join(path, key), children.length - 1) }); },
      }, "+ Condition"),
      depth < MAX_DEPTH ? el("button", {
        type: "button", class: "sb-add outline secondary", "data-testid": "add-group", "data-key": keyOf(path, "add-group"),
        disabled: full, onclick: () => { children.push({ all: [{}] }); changed({ rerender: true, structural: true, focus: join(join(join(path, key), children.length - 1), "all.0") }); },
      }, "+ Group") : null,
    );
    const legend = el("legend", { class: "visually-hidden", text: depth === 1 ? "Rules" : `Group of ${GROUP_LABELS[key]}` });
    box.append(legend, head, el("ul", { class: "sb-errors", role: "list" }), list, foot);
    return box;
  }

  function pickerOptions() {
    const groups = catalogue.groups.map((group) => ({ group, options: [] }));
    const byName = new Map(groups.map((g) => [g.group, g]));
    for (const entry of catalogue.fields) {
      if (entry.type === "segment" && !catalogue.segments.some((s) => s.id !== segmentId)) continue;
      const target = byName.get(entry.group) || byName.get("Custom");
      target.options.push([entryKey(entry), entry.label]);
    }
    return groups;
  }

  function renderCondition(node, path, siblings, index) {
    const box = el("div", { class: "sb-condition", "data-path": path, "data-testid": "rule-condition" });
    const entry = isPlainObject(node) ? entries.get(entryKey(node)) : undefined;
    const line = el("div", { class: "sb-line" });
    const known = isPlainObject(node) && (!node.type || entry);
    if (known) {
      line.append(selectControl({
        options: pickerOptions(), value: entry ? entryKey(node) : "", ariaLabel: "Field", path, part: "type",
        placeholder: "Choose a field…",
        onChange: (value) => {
          const picked = entries.get(value);
          replaceContents(node, picked ? defaults(picked) : {});
          changed({ rerender: true, structural: true });
        },
      }));
      if (entry) line.append(...conditionControls(node, entry, path));
    } else {
      line.append(rawControl(node, path, siblings, index));
    }
    const remove = el("button", {
      type: "button", class: "sb-remove outline secondary", "aria-label": "Remove condition", title: "Remove condition",
      "data-key": keyOf(path, "remove"),
      onclick: () => { siblings.splice(index, 1); changed({ rerender: true, structural: true }); },
    }, "×");
    box.append(el("div", { class: "sb-row" }, line, remove), el("ul", { class: "sb-errors", role: "list" }));
    return box;
  }

  // A node the builder has no editor for: its JSON, editable in place.
  function rawControl(node, path, siblings, index) {
    const area = el("textarea", { rows: 3, class: "sb-raw", "aria-label": "Condition as JSON", "data-key": keyOf(path, "raw"), "data-part": "" });
    area.value = JSON.stringify(node);
    area.addEventListener("change", () => {
      try {
        siblings[index] = JSON.parse(area.value);
        changed({ rerender: true, structural: true });
      } catch (error) {
        area.setAttribute("aria-invalid", "true");
      }
    });
    return area;
  }

  function conditionControls(node, entry, path) {
    const events = catalogue.event_names;
    switch (entry.type) {
      case "field":
      case "attribute":
        return [opControl(node, entry.ops, path, entry.value_type, entry), valueControl(node, entry.value_type, entry, path)];
      case "lifecycle_change":
        return [
          word("to"),
          selectControl({ options: catalogue.lifecycle_stages, value: node.stage, ariaLabel: "Stage", path, part: "stage", onChange: (v) => { node.stage = v; changed(); } }),
          word("in the last"),
          numberControl({ value: node.within_days, ariaLabel: "Days", path, part: "within_days", attrs: { min: 1, step: 1 }, onValue: (v) => { node.within_days = v; changed(); } }),
          word("days"),
        ];
      case "consent":
        return [
          selectControl({ options: catalogue.channels, value: node.channel, ariaLabel: "Channel", path, part: "channel", onChange: (v) => { node.channel = v; changed(); } }),
          word("for"),
          selectControl({ options: catalogue.purposes.map((p) => [p, label(p)]), value: node.purpose, ariaLabel: "Purpose", path, part: "purpose", onChange: (v) => { node.purpose = v; changed(); } }),
          word("is"),
          selectControl({ options: catalogue.consent_states.map((s) => [s, CONSENT_LABELS[s] || label(s)]), value: node.status, ariaLabel: "Consent status", path, part: "status", onChange: (v) => { node.status = v; changed(); } }),
        ];
      case "suppression":
        return [
          selectControl({ options: catalogue.suppression_channels.map((c) => [c, label(c)]), value: node.channel, ariaLabel: "Channel", path, part: "channel", onChange: (v) => { node.channel = v; changed(); } }),
          selectControl({ options: [["true", "is suppressed"], ["false", "is not suppressed"]], value: String(Boolean(node.suppressed)), ariaLabel: "Suppressed", path, part: "suppressed", onChange: (v) => { node.suppressed = v === "true"; changed(); } }),
        ];
      case "event": {
        const names = datalist(events);
        const props = datalist(eventProperties(node.name));
        const controls = [
          names.node, props.node,
          eventNameControl(node, path, names, [[props, []]]),
          selectControl({
            options: catalogue.event_ops.map((op) => [op, opLabel(op)]), value: node.op, ariaLabel: "Operator", path, part: "op",
            onChange: (op) => {
              node.op = op;
              if (COUNT_OPS.includes(op)) node.count = Number.isInteger(node.count) ? node.count : 1;
              else delete node.count;
              changed({ rerender: true });
            },
          }),
        ];
        if (COUNT_OPS.includes(node.op)) {
          controls.push(numberControl({ value: node.count, ariaLabel: "Times", path, part: "count", attrs: { min: 0, step: 1 }, onValue: (v) => { node.count = v; changed(); } }), word("times"));
        }
        controls.push(windowControl(node, path), whereControl(node, path, props));
        return controls;
      }
      case "event_aggregate": {
        const names = datalist(events);
        const numeric = datalist(eventProperties(node.name, ["revenue"]));
        const props = datalist(eventProperties(node.name));
        return [
          names.node, numeric.node, props.node,
          word("the"),
          selectControl({ options: catalogue.aggregate_fns.map((fn) => [fn, AGGREGATE_LABELS[fn] || fn]), value: node.fn, ariaLabel: "Aggregate", path, part: "fn", onChange: (v) => { node.fn = v; changed(); } }),
          word("of"),
          textControl({ value: node.property, ariaLabel: "Property", path, part: "property", list: numeric.id, onInput: (v) => { node.property = v.trim(); changed(); } }),
          word("of"),
          eventNameControl(node, path, names, [[numeric, ["revenue"]], [props, []]]),
          opControl(node, catalogue.aggregate_ops, path, "number", entry),
          valueControl(node, "number", entry, path),
          windowControl(node, path),
          whereControl(node, path, props),
        ];
      }
      case "engagement":
        return [
          selectControl({ options: [["performed", "has"], ["not_performed", "has not"]], value: node.op, ariaLabel: "Operator", path, part: "op", onChange: (v) => { node.op = v; changed(); } }),
          selectControl({ options: catalogue.engagement_actions.map((a) => [a, ENGAGEMENT_LABELS[a] || label(a)]), value: node.action, ariaLabel: "Action", path, part: "action", onChange: (v) => { node.action = v; changed(); } }),
          windowControl(node, path),
        ];
      case "rfm":
        return [
          selectControl({ options: catalogue.rfm_scores.map((s) => [s, RFM_LABELS[s] || label(s)]), value: node.score, ariaLabel: "Score", path, part: "score", onChange: (v) => { node.score = v; changed(); } }),
          opControl(node, NUMBER_OPS, path, "number", entry),
          valueControl(node, "number", entry, path),
          word("(1-5)"),
        ];
      case "rfm_group":
        return [
          opControl(node, ["in", "not_in"], path, null, entry),
          checkboxList({ options: catalogue.rfm_groups, values: Array.isArray(node.value) ? node.value : [], ariaLabel: "RFM groups", path, part: "value", onChange: (v) => { node.value = v; changed(); } }),
        ];
      case "segment":
        return [
          opControl(node, ["in", "not_in"], path, null, entry, { in: "is a member of", not_in: "is not a member of" }),
          selectControl({
            options: catalogue.segments.filter((s) => s.id !== segmentId).map((s) => [s.id, s.name]), value: node.segment,
            ariaLabel: "Segment", path, part: "segment", placeholder: "Choose a segment…",
            onChange: (v) => { node.segment = v === "" ? null : Number(v); changed(); },
          }),
        ];
      default:
        return [];
    }
  }

  // --- errors in place --------------------------------------------------------------------------------
  function partMatches(part, rest) {
    if (rest === "" || part === undefined) return false;
    if (part === "") return true;
    return part === rest || rest.startsWith(`${part}.`) || part.startsWith(`${rest}.`);
  }

  function showErrors(errors) {
    for (const box of mount.querySelectorAll(".sb-errors")) box.replaceChildren();
    for (const node of mount.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    for (const node of mount.querySelectorAll(".sb-invalid")) node.classList.remove("sb-invalid");
    const nodes = [...mount.querySelectorAll("[data-path]")];
    for (const error of errors) {
      const path = error.path || "";
      let best = null;
      for (const node of nodes) {
        const own = node.dataset.path;
        if (own === "" || path === own || path.startsWith(`${own}.`)) {
          if (!best || own.length > best.dataset.path.length) best = node;
        }
      }
      if (!best) continue;
      const own = best.dataset.path;
      const rest = own === "" ? path : path.slice(own.length + 1);
      best.querySelector(":scope > .sb-errors").append(el("li", { text: error.message, "data-error-path": path }));
      best.classList.add("sb-invalid");
      for (const control of best.querySelectorAll("[data-part]")) {
        if (control.closest("[data-path]") === best && partMatches(control.dataset.part, rest)) {
          control.setAttribute("aria-invalid", "true");
        }
      }
    }
  }

  // --- rendering, syncing, previewing -------------------------------------------------------------------
  function render(focusPath) {
    const active = mount.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    mount.replaceChildren(renderGroup(tree, "", null, 0, 1));
    showErrors(lastErrors);
    let target = null;
    if (focusPath !== undefined) target = mount.querySelector(`[data-key="${CSS.escape(keyOf(focusPath, "type"))}"]`);
    if (!target && active) target = mount.querySelector(`[data-key="${CSS.escape(active)}"]`);
    if (target) target.focus();
  }

  function sync() {
    textarea.value = JSON.stringify(tree, null, 2);
  }

  function changed({ rerender = false, structural = false, focus } = {}) {
    if (structural) lastErrors = [];
    sync();
    if (rerender) render(focus);
    schedulePreview();
  }

  let timer = null;
  let sequence = 0;
  let inFlight = null;

  function isStatic() {
    const checked = form.querySelector("input[name='kind']:checked");
    return checked ? checked.value === "static" : false;
  }

  function schedulePreview(delay = PREVIEW_DELAY_MS) {
    clearTimeout(timer);
    if (isStatic() || jsonBroken) return;
    previewBox.classList.add("is-loading");
    timer = setTimeout(runPreview, delay);
  }

  async function runPreview() {
    const mine = ++sequence;
    if (inFlight) inFlight.abort();
    inFlight = new AbortController();
    let data = null;
    let failure = null;
    try {
      const response = await fetch(previewUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfInput ? csrfInput.value : "" },
        body: JSON.stringify({ rules: tree }),
        signal: inFlight.signal,
      });
      if ((response.headers.get("Content-Type") || "").includes("application/json")) data = await response.json();
      else failure = response.status === 403 ? "You may not preview segments." : `The count is not available (${response.status}).`;
    } catch (error) {
      if (error.name === "AbortError") return;
      failure = "The count is not available: the server could not be reached.";
    }
    if (mine !== sequence) return;
    previewBox.classList.remove("is-loading");
    if (failure) {
      showCount("–", "");
      statusOut.textContent = failure;
      sampleOut.replaceChildren();
      return;
    }
    lastErrors = data.errors || [];
    showErrors(lastErrors);
    if (lastErrors.length) {
      const problems = lastErrors.length === 1 ? "1 problem" : `${lastErrors.length} problems`;
      showCount("–", "");
      statusOut.textContent = `Fix ${problems} marked in the rules to see the count.`;
      sampleOut.replaceChildren();
    } else if (data.timed_out) {
      showCount("?", "");
      statusOut.textContent = "Counting took too long here. Save the segment: it is counted in the background.";
      sampleOut.replaceChildren();
    } else {
      showCount(numberFormat.format(data.count), data.count === 1 ? "contact matches" : "contacts match");
      statusOut.textContent = `Counted in ${Math.round(data.elapsed_ms)} ms.`;
      renderSample(data.sample || []);
    }
  }

  function showCount(value, unit) {
    countOut.textContent = value;
    unitOut.textContent = unit;
  }

  function renderSample(rows) {
    if (!rows.length) {
      sampleOut.replaceChildren();
      return;
    }
    sampleOut.replaceChildren(
      el("p", { class: "muted" }, el("small", { text: "Newest matching contacts" })),
      el("ul", { class: "sample-list" }, rows.map((row) => el("li", {},
        el("a", { href: row.url || `${contactsUrl}${row.id}/`, text: row.name }),
        el("small", { class: "muted", text: [row.name !== row.email ? row.email : "", row.country, row.lifecycle_stage_label].filter(Boolean).join(" · ") }),
      ))),
    );
  }

  // --- kind, templates and the JSON field ---------------------------------------------------------------
  function applyKind() {
    const staticKind = isStatic();
    layout.hidden = staticKind;
    if (staticNote) staticNote.hidden = !staticKind;
    const starter = document.getElementById("starter-form");
    if (starter) starter.hidden = staticKind;
    if (!staticKind) schedulePreview(0);
  }

  function setupTemplates() {
    const starter = document.getElementById("starter-form");
    if (!starter) return;
    const select = starter.querySelector("select");
    const submit = starter.querySelector("button");
    if (submit) submit.hidden = true;
    const apply = () => {
      const chosen = templates.find((t) => t.key === select.value);
      select.value = "";
      if (!chosen) return;
      if (countConditions(tree) > 0 && !window.confirm(`Replace the current rules with “${chosen.label}”?`)) return;
      tree = JSON.parse(JSON.stringify(chosen.rules));
      const name = form.querySelector("input[name='name']");
      if (name && !name.value.trim()) name.value = chosen.label.split(":")[0];
      const dynamic = form.querySelector("input[name='kind'][value='dynamic']");
      if (dynamic && !dynamic.checked) {
        dynamic.checked = true;
        applyKind();
      }
      changed({ rerender: true, structural: true });
    };
    select.addEventListener("change", apply);
    starter.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  }

  function fromText(text) {
    const parsed = JSON.parse(text.trim() || '{"all": []}');
    if (isGroup(parsed)) return parsed;
    if (isPlainObject(parsed) && parsed.type) return { all: [parsed] };
    throw new Error("The top of a rule tree is a group: all, any or not.");
  }

  function showJsonProblem(message) {
    jsonBroken = true;
    clearTimeout(timer);
    sequence += 1;
    previewBox.classList.remove("is-loading");
    showCount("–", "");
    statusOut.textContent = "Fix the JSON to see the count.";
    sampleOut.replaceChildren();
    mount.replaceChildren(el("p", { class: "form-errors", role: "alert", text: `The builder cannot show these rules: ${message} Fix the JSON below.` }));
    jsonDetails.open = true;
  }

  textarea.addEventListener("input", () => {
    try {
      tree = fromText(textarea.value);
    } catch (error) {
      showJsonProblem(error.message);
      return;
    }
    jsonBroken = false;
    lastErrors = [];
    render();
    schedulePreview();
  });

  for (const radio of form.querySelectorAll("input[name='kind']")) radio.addEventListener("change", applyKind);

  // --- start --------------------------------------------------------------------------------------------
  mount.hidden = false;
  previewBox.hidden = false;
  try {
    tree = fromText(textarea.value);
    jsonDetails.open = false;
    render();
  } catch (error) {
    tree = { all: [] };
    showJsonProblem(error.message);
  }
  setupTemplates();
  applyKind();
})();
