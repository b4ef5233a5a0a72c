import { Arg, Ctx, Field, FieldResolver, ID, InputType, Mutation, Resolver, Root } from 'type-graphql';
import { WeightExport, WeightFormat } from '../../entities';
import { exportPath, exportWeights, EXPORT_TTL_MINUTES } from '../../services/weight-export';
import { requireUser } from '../../services/viewer';
import type { Context } from '../context';

@InputType()
class ExportWeightsInput {
  @Field(() => ID, { nullable: true, description: 'Export the model’s head version (give this or versionId).' })
  modelId?: string | null;

  @Field(() => ID, { nullable: true, description: 'Export this version (give this or modelId).' })
  versionId?: string | null;

  @Field(() => WeightFormat)
  format: WeightFormat;
}

@Resolver(() => WeightExport)
export class WeightExportResolver {
  @Mutation(() => WeightExport, {
    description: `Builds a file of a model version's weights, for the model's owner: a LoRA (DIFFUSERS_LORA, KOHYA_LORA; LoRA models only), `
      + `the whole UNet with any LoRA merged (DIFFUSERS_UNET) or a tar of a diffusers pack folder (DIFFUSERS_PACK). Download it from \`url\` `
      + `with your API key within ${EXPORT_TTL_MINUTES} minutes.`,
  })
  exportWeights(@Arg('input', () => ExportWeightsInput) input: ExportWeightsInput, @Ctx() { viewer, services }: Context): Promise<WeightExport> {
    return exportWeights(services.db, services.store, requireUser(viewer), input);
  }

  @FieldResolver(() => String, { description: 'Download path (GET, `Authorization: Bearer <key>`), relative to the API’s origin.' })
  url(@Root() exported: WeightExport): string {
    return exportPath(exported.id);
  }
}
