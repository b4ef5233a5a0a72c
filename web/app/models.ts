// Models (yours and the public metamodels, with their concepts) and the base models they start from.
import { gql } from './api';
import { byId, fillSelect, onSubmit, textRow } from './dom';

export interface Model {
  id: string;
  name: string;
  kind: 'PRIVATE' | 'PRIVATE_META' | 'META';
  baseModel: { name: string };
  headVersion: { number: number } | null;
  concepts: { token: string; category: string; kind: string }[];
}

interface Catalog {
  models: { nodes: Model[] };
  baseModels: { id: string; name: string }[];
}

const CATALOG = `{
  models(first: 100) { nodes { id name kind baseModel { name } headVersion { number } concepts { token category kind } } }
  baseModels { id name }
}`;

/** Wires the models section; `onChange` gets the models after every reload. */
export function setUpModels(onChange: (models: Model[]) => void): { reload: () => Promise<void> } {
  const error = byId('models-error');

  const reload = async () => {
    const { models: { nodes: models }, baseModels } = await gql<Catalog>(CATALOG);
    byId('model-rows').replaceChildren(
      ...models.map((m) =>
        textRow([
          m.name,
          m.kind,
          m.baseModel.name,
          m.headVersion ? `v${m.headVersion.number}` : 'base',
          m.concepts.map((c) => `${c.token} ${c.category} (${c.kind})`).join(', ') || '—',
        ]),
      ),
    );
    for (const select of document.querySelectorAll<HTMLSelectElement>('select[data-base-models]')) {
      fillSelect(select, baseModels.map((b) => ({ value: b.id, label: b.name })));
    }
    onChange(models);
  };

  onSubmit(byId<HTMLFormElement>('model-form'), error, async (data) => {
    await gql('mutation($input: CreateModelInput!) { createModel(input: $input) { id } }', {
      input: { name: String(data.get('name')).trim(), kind: data.get('kind'), baseModelId: data.get('baseModelId') },
    });
    byId<HTMLFormElement>('model-form').reset();
    await reload();
  });
  return { reload };
}
