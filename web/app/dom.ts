// Small DOM helpers shared by the sections.

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing from index.html`);
  return element as T;
}

/**
 * Runs one user action: clears the section's error, disables the action's button meanwhile, and
 * shows any failure as the section's error message.
 */
export async function act(error: HTMLElement, button: HTMLButtonElement | null, action: () => Promise<void>): Promise<void> {
  error.textContent = '';
  if (button) button.disabled = true;
  try {
    await action();
  } catch (failure) {
    error.textContent = failure instanceof Error ? failure.message : String(failure);
  } finally {
    if (button) button.disabled = false;
  }
}

/** Wires a form's submit to `act`, with its own submit button disabled while it runs. */
export function onSubmit(form: HTMLFormElement, error: HTMLElement, action: (data: FormData) => Promise<void>): void {
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void act(error, form.querySelector('button[type="submit"]'), () => action(new FormData(form)));
  });
}

/** A form field as a number, or undefined when left blank. */
export function optionalNumber(data: FormData, name: string): number | undefined {
  const value = String(data.get(name) ?? '').trim();
  return value === '' ? undefined : Number(value);
}

/** A form field as a string, or undefined when left blank. */
export function optionalString(data: FormData, name: string): string | undefined {
  const value = String(data.get(name) ?? '').trim();
  return value === '' ? undefined : value;
}

export function fillSelect(select: HTMLSelectElement, options: { value: string; label: string }[], blank?: string): void {
  const previous = select.value;
  select.replaceChildren(
    ...(blank === undefined ? [] : [new Option(blank, '')]),
    ...options.map(({ value, label }) => new Option(label, value)),
  );
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
}

/** A table row of text cells (text, never HTML: names and errors come from users). */
export function textRow(cells: (string | number | null | undefined)[]): HTMLTableRowElement {
  const row = document.createElement('tr');
  for (const cell of cells) {
    const td = document.createElement('td');
    td.textContent = cell === null || cell === undefined ? '' : String(cell);
    row.append(td);
  }
  return row;
}
