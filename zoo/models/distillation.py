"""Knowledge distillation (Hinton et al., 2015), trained by a custom step."""

import keras
from keras import ops

from zoo import checks
from zoo.registry import create_model, list_models, model_task, register_model
from zoo.saving import load_model
from zoo.steps import CustomStepModel, value_and_grad


@keras.saving.register_keras_serializable(package="zoo")
class Distiller(CustomStepModel):
    """Trains a student on the labels and on a frozen teacher's softened logits.

    The loss is `alpha * CE(labels, student) + (1 - alpha) * T^2 *
    KL(softmax(teacher / T) || softmax(student / T))`. Only the student has an
    optimizer, and the teacher runs in inference mode, so its weights and
    statistics stay exactly as they are.

    Args:
        student: the classifier to train, returning logits.
        teacher: a classifier returning logits; frozen here.
        temperature: the softening temperature `T`. Defaults to `3.0`.
        alpha: weight of the label loss. Defaults to `0.1`.
        teacher_trained: whether the teacher has been trained; `training.fit`
            trains an untrained one on the same data first. Defaults to `True`.
    """

    optimizer_groups = ("student",)

    def __init__(
        self, student, teacher, *, temperature=3.0, alpha=0.1, teacher_trained=True, **kwargs
    ):
        super().__init__(**kwargs)
        self.temperature = checks.positive_number(temperature, name="temperature", model=self.name)
        self.alpha = checks.fraction(alpha, name="alpha", model=self.name, include_one=True)
        self.student = (
            keras.saving.deserialize_keras_object(student) if isinstance(student, dict) else student
        )
        self.teacher = (
            keras.saving.deserialize_keras_object(teacher) if isinstance(teacher, dict) else teacher
        )
        self.teacher.trainable = False
        self.teacher_trained = bool(teacher_trained)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.labels_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.built = True  # the student and teacher are built

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.student_loss_tracker,
            self.distillation_loss_tracker,
            self.accuracy,
        ]

    def call(self, images):
        """The student's logits."""
        return self.student(images)

    def losses_for(self, images, labels, training=True):
        """`(loss, (student_loss, distillation_loss, student_logits))`."""
        teacher_logits = self.teacher(images, training=False)
        student_logits = self.student(images, training=training)
        student_loss = self.labels_loss(labels, student_logits)
        t = self.temperature
        soft_teacher = ops.softmax(teacher_logits / t)
        log_soft_student = ops.log_softmax(student_logits / t)
        kl = ops.sum(soft_teacher * (ops.log(soft_teacher + 1e-12) - log_soft_student), axis=-1)
        distillation_loss = ops.mean(kl) * t**2
        loss = self.alpha * student_loss + (1 - self.alpha) * distillation_loss
        return loss, (student_loss, distillation_loss, student_logits)

    def fit_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.student.trainable_variables
        (loss, parts), grads = value_and_grad(
            lambda: self.losses_for(images, labels), variables, has_aux=True
        )
        self.optimizer["student"].apply(grads, variables)
        return self._log(labels, loss, *parts)

    def evaluate_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        loss, parts = self.losses_for(images, labels, training=False)
        return self._log(labels, loss, *parts)

    def _log(self, labels, loss, student_loss, distillation_loss, student_logits):
        self.loss_tracker.update_state(loss)
        self.student_loss_tracker.update_state(student_loss)
        self.distillation_loss_tracker.update_state(distillation_loss)
        self.accuracy.update_state(labels, student_logits)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {
            **super().get_config(),
            "student": keras.saving.serialize_keras_object(self.student),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "temperature": self.temperature,
            "alpha": self.alpha,
            "teacher_trained": self.teacher_trained,
        }


@register_model(
    task="distillation",
    source="https://keras.io/examples/vision/knowledge_distillation/",
    paper="Hinton et al., Distilling the Knowledge in a Neural Network, 2015",
)
def distiller(
    *,
    input_shape=(28, 28, 1),
    num_classes=10,
    student="mlp",
    teacher="simple_cnn",
    temperature=3.0,
    alpha=0.1,
    name="distiller",
):
    """Distils a zoo student from a frozen teacher.

    Args:
        input_shape: image shape. Defaults to `(28, 28, 1)`.
        num_classes: number of classes. Defaults to `10`.
        student: a zoo classifier name. Defaults to `"mlp"`.
        teacher: a trained teacher's `.keras` file, or a zoo classifier name
            (`training.fit` then trains it on the same data first).
            Defaults to `"simple_cnn"`.
        temperature: the softening temperature. Defaults to `3.0`.
        alpha: weight of the label loss. Defaults to `0.1`.
        name: model name, also the prefix of its sub-models' names.
            Defaults to `"distiller"`.
    """
    checks.model_name(name)
    checks.positive_int(num_classes, name="num_classes", model=name)
    classifiers = [model for model in list_models() if model_task(model) == "classification"]
    checks.one_of(student, classifiers, name="student", model=name)
    teacher_file = isinstance(teacher, str) and teacher.endswith(".keras")
    if not teacher_file and teacher not in classifiers:
        checks.invalid(
            teacher, f"a .keras file or one of {classifiers}", name="teacher", model=name
        )
    kwargs = {"input_shape": input_shape, "num_classes": num_classes}
    student_model = create_model(student, **kwargs, name=f"{name}_student")
    if teacher_file:
        teacher_model, trained = load_model(teacher), True
    else:
        teacher_model, trained = create_model(teacher, **kwargs, name=f"{name}_teacher"), False
    return Distiller(
        student_model,
        teacher_model,
        temperature=temperature,
        alpha=alpha,
        teacher_trained=trained,
        name=name,
    )
