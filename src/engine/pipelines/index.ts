export { openGraphSession } from './sessions';
export { attachWeights, loadStableDiffusion, type StableDiffusionModels } from './stable-diffusion';
export {
  encodePngs, Txt2ImgError, Txt2ImgPipeline, type Txt2ImgOptions, type Txt2ImgProgress, type Txt2ImgRequest, type Txt2ImgResult,
} from './txt2img';
