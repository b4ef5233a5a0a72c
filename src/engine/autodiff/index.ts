export * from './adamw';
export * from './gradients';
export * from './train-step';
export * from './trainer';
