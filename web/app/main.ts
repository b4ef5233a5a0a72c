// The playground page: each section wires itself; this file connects their refreshes.
import { setUpAccount } from './account';
import { byId } from './dom';
import { setUpFineTune } from './finetune';
import { setUpGenerate } from './generate';
import { setUpJobs } from './jobs';
import { setUpModels } from './models';

const jobs = setUpJobs();
const refresh = async () => {
  await Promise.all([models.reload(), jobs.reload()]);
};
const fineTune = setUpFineTune(refresh);
const generate = setUpGenerate(refresh);
const models = setUpModels((list) => {
  fineTune.setModels(list);
  generate.setModels(list);
});

void setUpAccount(async (me) => {
  byId('workspace').hidden = me === null;
  byId('gallery').replaceChildren();
  if (me) await refresh();
});
